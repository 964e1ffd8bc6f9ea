"""What runs when. Jobs wait in a priority queue. One worker thread keeps a continuous decode batch:
between two decode steps it admits queued jobs of the batch's kind and model (up to max_batch), as
long as the most urgent queued job is one of them; finished and cancelled jobs leave at once. When
the batch empties, the next batch is for the most urgent job's model.

Every state change goes to the durable store as it happens; on start, jobs that were queued or
running when the last process died are queued again (same id, same seed)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lib.errors import Internal, Unavailable
from server import metrics
from server.jobs.artifacts import ArtifactStore
from server.jobs.errors import JobNotFound, QueueFull
from server.jobs.job import Job
from server.jobs.kinds import REQUEST_TYPES
from server.jobs.store import JobStore

if TYPE_CHECKING:  # the runner brings the engine (torch); the scheduler only calls what it is given
    from server.jobs.runner import BatchRunner

log = logging.getLogger("audiocraft.jobs")

RunnerFactory = Callable[[str, str], "BatchRunner"]  # (kind, model) -> runner


class Scheduler:
    def __init__(
        self,
        new_runner: RunnerFactory,
        store: JobStore,
        artifacts: ArtifactStore,
        queue_depth: int,
        max_batch: int,
        retention_s: float,
    ):
        self._new_runner = new_runner
        self.store = store
        self.artifacts = artifacts
        self.queue_depth = queue_depth
        self.max_batch = max_batch
        self.retention_s = retention_s
        self._live: dict[str, Job] = {}  # queued and running jobs; finished ones live in the store
        self._queue: list[Job] = []
        self._runner: BatchRunner | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._job_seconds: list[float] = []
        self._request_types: dict[str, type] = dict(REQUEST_TYPES)
        self._side_kinds: dict[str, Callable[[Job], None]] = {}
        # Called for each recovered generation job before it is queued again (downloads attach it
        # to its model's download).
        self.before_requeue: Callable[[Job], None] | None = None

    # -- side jobs: stored and shown like any job, run outside the decode queue (downloads) ------
    def register_side_kind(self, kind: str, request_type: type, resume: Callable[[Job], None]) -> None:
        """Jobs of `kind` are run by someone else; `resume` gets the unfinished ones at start."""
        self._request_types[kind] = request_type
        self._side_kinds[kind] = resume

    def add_side_job(self, job: Job) -> Job:
        with self._cond:
            self.store.insert(job.row())
            self._live[job.id] = job
            metrics.JOBS_SUBMITTED.labels(job.kind).inc()
        job.on_done(lambda: self._finished(job))
        return job

    def side_job_started(self, job: Job) -> None:
        job.state, job.started_at, job.attempts = "running", time.time(), job.attempts + 1
        self.store.update(job.id, state="running", started_at=job.started_at, attempts=job.attempts)

    def busy_models(self) -> set[str]:
        """Models that queued or running generation jobs need."""
        return {j.model for j in list(self._live.values()) if j.kind not in self._side_kinds}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.clean_up()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="audiocraft-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Admit nothing more; let running jobs finish within timeout_s. Whatever still runs then is
        dropped unfinished: the store says 'running', so it runs again at the next start."""
        with self._cond:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s + 30)

    def recover(self) -> int:
        rows = self.store.unfinished()
        # Jobs already live (submitted before start, or a second start) are tracked once, not twice.
        jobs = [Job.from_row(row, self._request_types) for row in rows if row["id"] not in self._live]
        # Side jobs (downloads) first: the queued jobs waiting for one find it running again.
        for job in [j for j in jobs if j.kind in self._side_kinds]:
            self._live[job.id] = job
            job.on_done(lambda job=job: self._finished(job))
            self._side_kinds[job.kind](job)
        for job in [j for j in jobs if j.kind not in self._side_kinds]:
            if self.before_requeue is not None:
                self.before_requeue(job)
            if job.state == "running":
                log.warning("job %s was interrupted; queueing it again", job.id)
            job.state, job.progress, job.eta_s, job.started_at = "queued", 0.0, None, None
            self.store.update(job.id, state="queued", progress=0.0, eta_s=None, started_at=None)
            self._track(job)
        self._sort()
        return len(rows)

    def clean_up(self) -> int:
        old = self.store.finished_before(time.time() - self.retention_s)
        for job_id in old:
            self.artifacts.remove(job_id)
        self.store.delete(old)
        return len(old)

    # -- submission and queries ------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: list[Job]) -> list[Job]:
        """All or nothing: if the queue can't take every job, none is taken."""
        with self._cond:
            if len(self._queue) + len(jobs) > self.queue_depth:
                metrics.JOBS_REJECTED.inc()
                raise QueueFull(len(self._queue), self._retry_after_s())
            self.store.insert_many([j.row() for j in jobs])
            for job in jobs:
                self._track(job)
                metrics.JOBS_SUBMITTED.labels(job.kind).inc()
            self._sort()
            self._cond.notify_all()
        return jobs

    def get(self, job_id: str) -> Job:
        job = self._live.get(job_id)
        if job is not None:
            return job
        row = self.store.get(job_id)
        if row is None:
            raise JobNotFound(job_id)
        return Job.from_row(row, self._request_types)

    def position(self, job: Job) -> int | None:
        with self._cond:
            return self._queue.index(job) if job in self._queue else None

    def list(self, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        rows, total = self.store.page(state, limit, offset)
        # Live jobs carry fresher progress than their stored row.
        return [self._live.get(r["id"]) or Job.from_row(r, self._request_types) for r in rows], total

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                metrics.QUEUE_DEPTH.set(len(self._queue))
                job.finish("cancelled")
                return job
        # Running: the decode loop stops at its next step. Finished: nothing to do.
        job.cancel_requested.set()
        return job

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counts(self) -> tuple[int, int]:
        runner = self._runner
        return len(self._queue), len(runner) if runner is not None else 0

    async def wait(self, job: Job) -> Job:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        job.on_done(wake)
        await done
        return job

    # -- internals -------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _ready(self) -> list[Job]:
        """Queued jobs that can run now: not waiting for their model's download. Jobs whose
        download failed fail with its error (called with the lock held)."""
        for job in [j for j in self._queue if j.waits_for is not None and j.waits_for.finished]:
            download, job.waits_for = job.waits_for, None
            if download.state != "succeeded":
                self._queue.remove(job)
                error = download.error or Unavailable(
                    f"the download of {job.model} was {download.state}", code="download_failed"
                )
                job.finish("failed", error)
        return [j for j in self._queue if j.waits_for is None]

    def _track(self, job: Job) -> None:
        self._live[job.id] = job
        self._queue.append(job)
        job.on_done(lambda: self._finished(job))
        if job.waits_for is not None:  # wake the worker when the download ends
            job.waits_for.on_done(self._wake)

    def _finished(self, job: Job) -> None:
        """Runs in whichever thread ended the job: persist, then forget the live copy."""
        self.store.update(
            job.id,
            state=job.state,
            progress=job.progress,
            eta_s=job.eta_s,
            finished_at=job.finished_at,
            error=job.error,
            result=job.result,
        )
        metrics.JOBS_FINISHED.labels(job.kind, job.state).inc()
        self._live.pop(job.id, None)

    def _sort(self) -> None:
        self._queue.sort(key=lambda j: (j.priority, j.created_at))
        metrics.QUEUE_DEPTH.set(len(self._queue))

    def _retry_after_s(self) -> int:
        recent = self._job_seconds[-20:]
        per_job = sum(recent) / len(recent) if recent else 10.0
        return max(1, round(per_job * max(1, len(self._queue)) / self.max_batch))

    def _admissions(self) -> list[Job]:
        """Queued jobs that join the running batch now (called with the lock held)."""
        ready = self._ready()
        if not ready or self._stopping:
            return []
        head = ready[0]
        if self._runner is None or not len(self._runner):
            self._runner = self._new_runner(head.kind, head.model)
        elif not self._runner.accepts(head):
            return []  # the most urgent job needs another model: let this batch drain first
        room = self.max_batch - len(self._runner)
        joining = [j for j in ready if self._runner.accepts(j)][:room]
        for job in joining:
            self._queue.remove(job)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        return joining

    def _start(self, job: Job, now: float) -> None:
        job.state, job.started_at, job.attempts = "running", now, job.attempts + 1
        self.store.update(job.id, state="running", started_at=job.started_at, attempts=job.attempts)
        job.on_done(lambda: self._job_seconds.append(time.time() - (job.started_at or time.time())))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready() and not self._runner_busy() and not self._stopping:
                    self._cond.wait(timeout=3600)
                    if not self._queue:
                        self.clean_up()
                if self._stopping and (not self._runner_busy() or time.monotonic() > self._stop_deadline):
                    if self._runner_busy():
                        for job in self._runner.interrupt():
                            log.warning("job %s interrupted by shutdown; it runs again at the next start", job.id)
                    return
                joining = self._admissions()
            now = time.time()  # jobs that join together share their start time
            for job in joining:
                self._start(job, now)
                self._runner.admit(job)
            if joining:
                metrics.BATCH_SIZE.observe(len(self._runner))
            metrics.RUNNING.set(len(self._runner) if self._runner is not None else 0)
            if not self._runner_busy():
                continue
            try:
                self._runner.step()
            except Exception:  # the worker must survive anything one batch does
                log.exception("decode step failed")
                self._runner.fail_all(Internal("generation failed: internal error; see logs", code="generation_failed"))

    def _runner_busy(self) -> bool:
        return self._runner is not None and len(self._runner) > 0
