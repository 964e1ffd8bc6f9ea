"""Job records on Redis, and the keys of the queue.

Keys (all under one prefix, `audiocraft` by default):

- `job:{id}` (hash): the job's record: the SQLite store's columns, plus `lane`, `member` (its place
  in the lane's ready set), while it runs `owner` and `entry` (its worker, its stream entry),
  `cancel` (asked while it runs) and `detail` (a download's byte counts).
- `jobs` (sorted set): every job id by created_at (GET /api/jobs, newest first).
- `state:{state}` (sorted set): the ids in each state by created_at (the filter, the counts, the
  queue's depth).
- `finished` (sorted set): finished ids by finished_at (retention).
- `ready:{lane}` (sorted set): the lane's queued jobs; score = priority, member =
  `{created_at:017.6f}:{id}`, so equal priorities go by age.
- `run:{lane}` (stream, consumer group `workers`): one entry per attempt at a job, pending for the
  worker that runs it; its heartbeat resets the entry's idle time, and XAUTOCLAIM hands the entries
  of a silent worker to another.
- `notify` (capped stream): a line per submission and per finish; lanes waiting for work block on it.
- `durations:{kind}` (list): `seconds units` of the kind's last jobs that succeeded, newest first
  (RedisThroughput: the Retry-After of a full queue, on every node).
- `stats` (hash): counters: finished, dropped (late finishes of a presumed-dead worker), reclaimed.
- `worker:{name}` (expiring string): a worker's report, rewritten with each heartbeat: its models
  and its lanes' slots (a WorkerInfo as JSON, workers.py).

Values are strings; None is a missing field. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from lib.schemas import ErrorBody, JobResult
from server.jobs.backlog import HISTORY, Throughput
from server.jobs.job import FINAL_STATES, STATES, UNFINISHED_STATES
from server.jobs.store import COLUMNS

PREFIX = "audiocraft"
GROUP = "workers"

_INTS = {"seed", "priority", "attempts"}
_FLOATS = {"progress", "eta_s", "created_at", "started_at", "finished_at"}
_JSON = {"request", "error", "result"}


def member(created_at: float, job_id: str) -> str:
    """A job's place in its lane's ready set (equal priorities order by this, as text: by age)."""
    return f"{created_at:017.6f}:{job_id}"


def encode(value: Any) -> str:
    if hasattr(value, "model_dump"):
        return json.dumps(value.model_dump(mode="json"))
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def encode_fields(fields: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(fields to set, fields to delete: those that are None)."""
    present = {k: encode(v) for k, v in fields.items() if v is not None}
    return present, [k for k, v in fields.items() if v is None]


def decode_row(raw: dict[str, str]) -> dict[str, Any]:
    """A hash as the SQLite store's row: the same columns, the same types."""
    row: dict[str, Any] = {}
    for column in COLUMNS:
        value = raw.get(column)
        if value is None or value == "":
            row[column] = {"progress": 0.0, "attempts": 0}.get(column)
        elif column in _INTS:
            row[column] = int(value)
        elif column in _FLOATS:
            row[column] = float(value)
        elif column == "request":
            row[column] = json.loads(value)
        elif column == "error":
            row[column] = ErrorBody.model_validate_json(value)
        elif column == "result":
            row[column] = JobResult.model_validate_json(value)
        else:
            row[column] = value
    return row


class Keys:
    def __init__(self, prefix: str = PREFIX):
        self.prefix = prefix
        self.all = f"{prefix}:jobs"
        self.finished = f"{prefix}:finished"
        self.notify = f"{prefix}:notify"
        self.stats = f"{prefix}:stats"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def state(self, state: str) -> str:
        return f"{self.prefix}:state:{state}"

    def ready(self, lane: str) -> str:
        return f"{self.prefix}:ready:{lane}"

    def run(self, lane: str) -> str:
        return f"{self.prefix}:run:{lane}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def audio(self, job_id: str) -> str:
        return f"{self.prefix}:audio:{job_id}"

    def durations(self, kind: str) -> str:
        return f"{self.prefix}:durations:{kind}"


class RedisThroughput(Throughput):
    """backlog.Throughput with its samples on Redis: every node's Retry-After learns from the jobs
    that every worker finished."""

    def __init__(self, client: redis.Redis, keys: Keys):
        super().__init__()
        self.redis = client
        self.keys = keys

    def add(self, kind: str, seconds: float, amount: float) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.durations(kind), f"{seconds!r} {amount!r}")
            pipe.ltrim(self.keys.durations(kind), 0, HISTORY - 1)
            pipe.execute()

    def samples(self, kind: str) -> list[tuple[float, float]]:
        return _samples(self.redis.lrange(self.keys.durations(kind), 0, -1))

    def snapshot(self, kinds: Iterable[str]) -> Throughput:
        """The kinds' samples in one read, as a Throughput of this process (an estimate asks it once per
        job)."""
        names = sorted(set(kinds))
        with self.redis.pipeline(transaction=False) as pipe:
            for kind in names:
                pipe.lrange(self.keys.durations(kind), 0, -1)
            lists = pipe.execute()
        copy = Throughput(self.default)
        for kind, entries in zip(names, lists, strict=True):
            for seconds, amount in reversed(_samples(entries)):
                copy.add(kind, seconds, amount)
        return copy


def _samples(entries: list[str]) -> list[tuple[float, float]]:
    pairs = (entry.split() for entry in entries)
    return [(float(seconds), float(amount)) for seconds, amount in pairs]


def connect(url: str) -> redis.Redis:
    """A client that fails fast (an API node answers 503 at once while Redis is away) and reconnects by
    itself on the next call. Lazy: nothing is sent until the first command."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        # One quick retry: the first call after Redis restarts finds a stale socket and reconnects.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        socket_connect_timeout=2.0,
        socket_timeout=10.0,  # past the longest blocking read (queue.NOTIFY_BLOCK_MS)
        health_check_interval=15,
    )


class RedisJobStore:
    """The JobStore calls (server/jobs/store.py), on Redis hashes and their indexes. The queue's own
    changes (submit, take, finish, reclaim) are Lua scripts in RedisScheduler; insert_many here writes
    records only (its queued rows are in no lane's ready set)."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX):
        self.redis = client
        self.keys = Keys(prefix)

    @property
    def where(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def close(self) -> None:
        self.redis.close()

    def insert(self, row: dict[str, Any]) -> None:
        self.insert_many([row])

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """All or nothing (MULTI/EXEC); an id that exists is refused before anything is written."""
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids) or any(self.redis.exists(self.keys.job(i)) for i in ids):
            raise ValueError("a job with this id exists")
        with self.redis.pipeline(transaction=True) as pipe:
            for row in rows:
                fields, _ = encode_fields(row)
                pipe.hset(self.keys.job(row["id"]), mapping=fields)
                self._index(pipe, row["id"], row["state"], row["created_at"], row.get("finished_at"))
            pipe.execute()

    def _index(self, pipe: Any, job_id: str, state: str, created_at: float, finished_at: float | None) -> None:
        pipe.zadd(self.keys.all, {job_id: created_at})
        for other in STATES:
            if other != state:
                pipe.zrem(self.keys.state(other), job_id)
        pipe.zadd(self.keys.state(state), {job_id: created_at})
        if state in FINAL_STATES and finished_at is not None:
            pipe.zadd(self.keys.finished, {job_id: finished_at})

    def update(self, job_id: str, **fields: Any) -> None:
        present, gone = encode_fields(fields)
        with self.redis.pipeline(transaction=True) as pipe:
            if present:
                pipe.hset(self.keys.job(job_id), mapping=present)
            if gone:
                pipe.hdel(self.keys.job(job_id), *gone)
            pipe.execute()
        if "state" in fields:
            raw = self.redis.hmget(self.keys.job(job_id), "created_at", "finished_at")
            with self.redis.pipeline(transaction=True) as pipe:
                self._index(pipe, job_id, fields["state"], float(raw[0]), float(raw[1]) if raw[1] else None)
                pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.raw(job_id)
        return decode_row(raw) if raw else None

    def raw(self, job_id: str) -> dict[str, str]:
        return self.redis.hgetall(self.keys.job(job_id))

    def raw_many(self, ids: list[str]) -> list[dict[str, str]]:
        """The hashes of these ids, in order ({} for one that is gone)."""
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            return pipe.execute()

    def unfinished_ids(self) -> list[str]:
        with self.redis.pipeline(transaction=True) as pipe:
            for state in UNFINISHED_STATES:
                pipe.zrange(self.keys.state(state), 0, -1)
            return [i for ids in pipe.execute() for i in ids]

    def unfinished(self) -> list[dict[str, Any]]:
        rows = [decode_row(r) for r in self.raw_many(self.unfinished_ids()) if r]
        return sorted(rows, key=lambda r: (r["priority"], r["created_at"]))

    def page(self, state: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        raws, total = self.page_raw(state, limit, offset)
        return [decode_row(r) for r in raws], total

    def page_raw(self, state: str | None, limit: int, offset: int) -> tuple[list[dict[str, str]], int]:
        """Newest first, as hashes."""
        key = self.keys.state(state) if state else self.keys.all
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(key)
            pipe.zrevrange(key, offset, offset + limit - 1)
            total, ids = pipe.execute()
        return [r for r in self.raw_many(ids) if r], total

    def finished_before(self, cutoff: float) -> list[str]:
        return self.redis.zrangebyscore(self.keys.finished, "-inf", f"({cutoff!r}")

    def delete(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.delete(self.keys.job(job_id))
            pipe.zrem(self.keys.all, *job_ids)
            pipe.zrem(self.keys.finished, *job_ids)
            for state in STATES:
                pipe.zrem(self.keys.state(state), *job_ids)
            pipe.execute()
