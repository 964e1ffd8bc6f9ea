"""The durable job store: SQLite in WAL mode under the data dir.

State changes are committed as they happen, so after a crash (even SIGKILL) the store says exactly
which jobs were queued or running; those run again with their recorded seed. The store holds every
prompt: its directory is 0700 and its files (the database, -wal, -shm) 0600. A write that the full
disk refuses raises InsufficientStorage (507) and leaves the store as it was."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from lib.files import DATA_DIR, private_dir, private_file, space_errors
from lib.schemas import ErrorBody, JobResult
from server.jobs.job import FINAL_STATES, UNFINISHED_STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    seed INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    eta_s REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    after TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
"""
# Columns added since the first release, for stores made before them.
ADDED_COLUMNS = {"after": "TEXT"}

COLUMNS = (
    "id",
    "kind",
    "model",
    "request",
    "seed",
    "priority",
    "state",
    "progress",
    "eta_s",
    "created_at",
    "started_at",
    "finished_at",
    "error",
    "result",
    "attempts",
    "after",
)


class JobStore:
    def __init__(self, path: Path):
        private_dir(path.parent)
        self.path = path
        # SQLite gives -wal and -shm the database file's mode: made 0600 first, all three are.
        private_file(path)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                private_file(side)
        # One connection shared by the worker thread and the event loop, serialised by a lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash; only power loss can drop the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, row: dict[str, Any]) -> None:
        self.insert_many([row])

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """All or nothing: a batch submission is stored whole or not at all."""
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._lock, space_errors(DATA_DIR):
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    f"INSERT INTO jobs ({cols}) VALUES ({marks})",
                    [tuple(_encode(r).get(c) for c in COLUMNS) for r in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT (disk full) has already rolled back
                    self._db.execute("ROLLBACK")
                raise

    def update(self, job_id: str, **fields: Any) -> None:
        encoded = _encode(fields)
        assignments = ", ".join(f"{k} = ?" for k in encoded)
        with self._lock, space_errors(DATA_DIR):
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*encoded.values(), job_id))

    def unfinished(self) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in UNFINISHED_STATES)
        return self._select(f"WHERE state IN ({marks}) ORDER BY priority, created_at", UNFINISHED_STATES)

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self._select("WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def page(self, state: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
        rows = self._select(f"{where} ORDER BY created_at DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return rows, total

    def finished_before(self, cutoff: float) -> list[str]:
        with self._lock:
            marks = ", ".join("?" for _ in FINAL_STATES)
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished_at < ?", (*sorted(FINAL_STATES), cutoff)
            ).fetchall()
        return [r[0] for r in rows]

    def delete(self, job_ids: list[str]) -> None:
        with self._lock, space_errors(DATA_DIR):
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    def _select(self, clause: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs {clause}", args).fetchall()
        return [_decode(dict(zip(COLUMNS, r, strict=True))) for r in rows]


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("request", "error", "result"):
        if key in out and out[key] is not None and not isinstance(out[key], str):
            value = out[key]
            out[key] = json.dumps(value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row["request"] = json.loads(row["request"])
    row["error"] = ErrorBody.model_validate_json(row["error"]) if row["error"] else None
    row["result"] = JobResult.model_validate_json(row["result"]) if row["result"] else None
    return row
