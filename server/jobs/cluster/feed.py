"""A streaming job's audio on Redis: one stream per job, `{prefix}:audio:{id}`, from the worker that
runs the job to the API nodes that answer its readers (server/jobs/feed.py says what a feed is).

Each entry holds one block (`pcm`: float32 little-endian, interleaved); the last one says how the job
ended (`end`). The stream is bounded (FEED_MAXLEN entries, about 0.5 s of audio each: far more than
the longest generation makes) and expires FEED_TTL_S after its last write, FEED_END_TTL_S after the
end: a reader that comes later is sent the job's stored answer instead. The blocks are bytes, so they
go through a client of their own that does not decode answers as text.

A job that runs again (its worker died) starts its stream again from the first sample, under a new
attempt number that every block carries. A reader that was part-way through the first attempt goes
on from where it was: it skips as many samples of the new attempt as it has already sent (the same
seed makes the same audio), so it never plays a stretch twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import numpy as np
import redis

from server.jobs.errors import QueueUnavailable

log = logging.getLogger("audiocraft.jobs")

FEED_MAXLEN = 4096
FEED_TTL_S = 3600
FEED_END_TTL_S = 300
READ_BLOCK_MS = 1000  # a reader looks at the job's record at least this often (an end with no feed)


def binary_client(client: redis.Redis) -> redis.Redis:
    """A client to the same server whose answers stay bytes."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class RedisFeedWriter:
    """The worker's side. Best effort: a block Redis does not take is logged and dropped (the job's
    answer is stored whatever happens to its stream)."""

    def __init__(self, client: redis.Redis, key: str, attempt: int = 1):
        self.redis, self.key, self.attempt = client, key, attempt

    def write(self, audio: np.ndarray) -> None:
        data = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
        self._add({"pcm": data, "attempt": self.attempt}, FEED_TTL_S)

    def close(self, state: str) -> None:
        self._add({"end": state}, FEED_END_TTL_S)

    def _add(self, fields: dict, ttl_s: int) -> None:
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.key, fields, maxlen=FEED_MAXLEN, approximate=True)
                pipe.expire(self.key, ttl_s)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("the audio stream %s lost a block: %s", self.key, exc)


async def follow(
    client: redis.Redis, key: str, channels: int, ended: Callable[[], bool], where: str
) -> AsyncIterator[np.ndarray]:
    """The API node's side: every block from the first, until the end entry, or until the job's record
    says it ended (`ended`, asked when nothing came for READ_BLOCK_MS: a job that failed before its
    lane opened the feed writes none). Redis out of reach is QueueUnavailable (503), as for every
    call an API node makes."""
    last = b"0-0"
    attempt: bytes | None = None
    sent = 0  # samples per channel sent to this reader, over every attempt
    made = 0  # samples per channel of the current attempt seen so far
    while True:
        try:
            answer = await asyncio.to_thread(client.xread, {key: last}, count=256, block=READ_BLOCK_MS)
            if not answer:
                if await asyncio.to_thread(ended):
                    return
                continue
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailable(where) from exc
        for entry_id, fields in answer[0][1]:
            last = entry_id
            if b"end" in fields:
                return
            block = np.frombuffer(fields[b"pcm"], dtype="<f4").reshape(-1, channels).T
            if fields.get(b"attempt") != attempt:
                attempt, made = fields.get(b"attempt"), 0
            start = max(0, sent - made)  # of this block, what the reader has had already
            made += block.shape[1]
            if start < block.shape[1]:
                sent += block.shape[1] - start
                yield block[:, start:]
