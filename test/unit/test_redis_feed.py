"""A streaming job's audio on Redis (server/jobs/cluster/feed.py), on a real redis-server: a reader
gets every block in order, and a job that runs again after its worker died does not play the
stretch a reader has already had a second time."""

from __future__ import annotations

import asyncio

import numpy as np
import redis

from server.jobs.cluster import feed

KEY = "test:audio:job1"


def blocks(start: int, sizes: list[int]) -> list[np.ndarray]:
    """Stereo blocks whose samples count up from `start` (so what a reader got says where from)."""
    out, at = [], start
    for n in sizes:
        ramp = np.arange(at, at + n, dtype=np.float32)
        out.append(np.stack([ramp, -ramp]))
        at += n
    return out


async def read_all(client: redis.Redis, writes) -> np.ndarray:
    """Follow the feed while `writes` (a coroutine) writes it; everything the reader got, joined."""
    got: list[np.ndarray] = []

    async def reader() -> None:
        async for block in feed.follow(client, KEY, 2, lambda: False, "redis"):
            got.append(block)

    task = asyncio.create_task(reader())
    await writes(got)
    await asyncio.wait_for(task, 30)
    return np.concatenate(got, axis=1)


async def until(got: list, count: int) -> None:
    """Wait on the reader's progress, not on a clock."""
    while len(got) < count:
        await asyncio.sleep(0.01)


def test_a_reader_gets_every_block_in_order(redis_url):
    client = feed.binary_client(redis.Redis.from_url(redis_url))
    writer = feed.RedisFeedWriter(client, KEY, attempt=1)

    async def writes(got):
        for block in blocks(0, [100, 50, 75]):
            writer.write(block)
        writer.close("succeeded")

    audio = asyncio.run(read_all(client, writes))
    np.testing.assert_array_equal(audio[0], np.arange(225, dtype=np.float32))
    np.testing.assert_array_equal(audio[1], -audio[0])


def test_a_rerun_goes_on_from_where_the_reader_was(redis_url):
    """Attempt 1 sends 150 samples and dies; attempt 2 starts again from 0 in blocks of another size.
    The reader ends with each sample once: 0..149 from attempt 1, 150..399 from attempt 2."""
    client = feed.binary_client(redis.Redis.from_url(redis_url))
    first = feed.RedisFeedWriter(client, KEY, attempt=1)

    async def writes(got):
        for block in blocks(0, [100, 50]):
            first.write(block)
        await until(got, 2)
        client.delete(KEY)  # what the queue does when a new attempt opens its feed
        second = feed.RedisFeedWriter(client, KEY, attempt=2)
        for block in blocks(1000, [60, 60, 60, 60, 160]):  # 1000+: tells the attempts apart
            second.write(block)
        second.close("succeeded")

    audio = asyncio.run(read_all(client, writes))
    want = np.concatenate([np.arange(150), 1000 + np.arange(150, 400)]).astype(np.float32)
    np.testing.assert_array_equal(audio[0], want)


def test_a_reader_that_comes_during_the_rerun_gets_it_from_the_start(redis_url):
    client = feed.binary_client(redis.Redis.from_url(redis_url))
    feed.RedisFeedWriter(client, KEY, attempt=1).write(blocks(0, [100])[0])
    client.delete(KEY)
    second = feed.RedisFeedWriter(client, KEY, attempt=2)

    async def writes(got):
        for block in blocks(0, [80, 80]):
            second.write(block)
        second.close("succeeded")

    audio = asyncio.run(read_all(client, writes))
    np.testing.assert_array_equal(audio[0], np.arange(160, dtype=np.float32))
