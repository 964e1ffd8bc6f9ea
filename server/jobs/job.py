"""One unit of work and its life: queued -> running -> succeeded | failed | cancelled."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from lib.errors import ServiceError
from lib.schemas import DownloadProgress, ErrorBody, JobResult, JobState, TrainingProgress
from lib.schemas import Job as JobView

# The states are written once, in lib.schemas.JobState; everything else derives from it.
STATES: tuple[str, ...] = get_args(JobState)
UNFINISHED_STATES: tuple[str, ...] = STATES[:2]  # queued, running
FINAL_STATES: frozenset[str] = frozenset(STATES[2:])  # succeeded, failed, cancelled
assert UNFINISHED_STATES == ("queued", "running"), "JobState starts with the unfinished states"

log = logging.getLogger("audiocraft.jobs")

# Synchronous requests jump ahead of bulk batch work.
PRIORITY_INTERACTIVE = 0
PRIORITY_BATCH = 10


@dataclass
class Job:
    kind: str
    model: str
    request: Any  # a lib.schemas request model
    seed: int
    priority: int = PRIORITY_INTERACTIVE
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: JobState = "queued"
    progress: float = 0.0
    eta_s: float | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorBody | None = None
    result: JobResult | None = None
    attempts: int = 0
    # The job this one runs after (a generation after its model's download): stored, so a
    # recovered job waits again. If that job does not succeed, this one fails with its error.
    after: str | None = None
    # Live only (not stored): what the lane reports beside progress (a download's byte counts),
    # and the job `after` names, once the queue has found it.
    detail: DownloadProgress | TrainingProgress | None = None
    waits_for: Job | None = field(default=None, repr=False)
    # A streaming job's audio while it runs (JobQueue.open_feed), set by its lane.
    feed: Any = field(default=None, repr=False)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # Set when the server stops before the job ends: the job stops without finishing, so the
    # store still says 'running' and the next start runs it again.
    interrupted: threading.Event = field(default_factory=threading.Event)
    _waiters: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def generation_time_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def run_after(self, other: Job | None) -> None:
        """Queue this job to run once `other` has succeeded (nothing when None)."""
        if other is not None:
            self.after, self.waits_for = other.id, other

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the job ends (at once if it already has)."""
        with self._lock:
            if not self.finished:
                self._waiters.append(callback)
                return
        callback()

    def finish(self, state: JobState, error: ServiceError | ErrorBody | None = None) -> None:
        if isinstance(error, ServiceError):
            error = ErrorBody.of(error)
        with self._lock:
            if self.finished:
                return
            self.state = state
            self.error = error
            self.finished_at = time.time()
            if state == "succeeded":
                self.progress = 1.0
            self.eta_s = 0.0 if state == "succeeded" else None
            waiters, self._waiters = self._waiters, []
        for callback in waiters:  # each one runs: a failing one must not leave a request waiting
            try:
                callback()
            except Exception:
                log.exception("a callback at the end of job %s failed", self.id)

    def outcome(self) -> dict[str, Any]:
        """The stored fields an ended job changes."""
        return {
            "state": self.state,
            "progress": self.progress,
            "eta_s": self.eta_s,
            "finished_at": self.finished_at,
            "error": self.error,
            "result": self.result,
        }

    def row(self) -> dict[str, Any]:
        """The persistent fields, as the job store keeps them."""
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "request": self.request.model_dump(mode="json", by_alias=True),
            "seed": self.seed,
            "priority": self.priority,
            "state": self.state,
            "progress": self.progress,
            "eta_s": self.eta_s,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "result": self.result,
            "attempts": self.attempts,
            "after": self.after,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any], request_types: dict[str, type]) -> Job:
        fields = {k: v for k, v in row.items() if k != "request"}
        return cls(request=request_types[row["kind"]].model_validate(row["request"]), **fields)

    def _download(self) -> DownloadProgress | None:
        detail = self.detail if self.waits_for is None or self.waits_for.finished else self.waits_for.detail
        return detail if isinstance(detail, DownloadProgress) else None

    def view(self, position: int | None = None) -> JobView:
        return JobView(
            id=self.id,
            kind=self.kind,
            state=self.state,
            model=self.model,
            seed=self.seed,
            progress=round(self.progress, 4),
            eta_s=None if self.eta_s is None else round(self.eta_s, 2),
            position=position,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            result=self.result,
            request=self.request.model_dump(mode="json", by_alias=True, exclude_none=True),
            download=self._download(),
            training=self.detail if isinstance(self.detail, TrainingProgress) else None,
        )
