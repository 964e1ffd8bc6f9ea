"""The job queue's two backends, for tests that run against both (the `backend` fixture in
test/conftest.py): the embedded one (SQLite, server/jobs/scheduler.py) and Redis
(server/jobs/cluster/), on the session's own redis-server, emptied before each test."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from server.jobs.artifacts import ArtifactStore
from server.jobs.queue import JobQueue
from server.jobs.scheduler import Scheduler
from server.jobs.store import JobStore


@dataclass
class Backend:
    name: str  # "sqlite" or "redis"
    tmp_path: Path
    redis_url: str | None = None

    @property
    def duplicate_error(self) -> type[Exception]:
        """What a batch with an id that exists raises."""
        return sqlite3.IntegrityError if self.name == "sqlite" else ValueError

    @property
    def interrupted_state(self) -> str:
        """What the record says of a job a stopping queue left unfinished: SQLite keeps 'running' for
        the next start; a Redis worker hands it back to the queue at once."""
        return "running" if self.name == "sqlite" else "queued"

    def store(self, db: Path | None = None):
        """A store (SQLite: at `db`, default tmp_path/jobs.sqlite3; Redis: the test's database)."""
        if self.name == "sqlite":
            return JobStore(db or self.tmp_path / "jobs.sqlite3")
        from server.jobs.cluster.store import RedisJobStore, connect

        return RedisJobStore(connect(self.redis_url))

    def queue(self, lanes, store, artifacts: ArtifactStore, queue_depth: int, retention_s: float, **kw) -> JobQueue:
        if self.name == "sqlite":
            return Scheduler(
                lanes, store=store, artifacts=artifacts, queue_depth=queue_depth, retention_s=retention_s, **kw
            )
        from server.jobs.cluster.queue import RedisScheduler

        return RedisScheduler(lanes, store, artifacts, queue_depth, retention_s, **kw)
