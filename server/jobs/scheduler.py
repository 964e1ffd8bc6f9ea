"""What runs when. Jobs wait in a priority queue; one worker thread takes the next job plus any
queued jobs it can share a decode batch with (same kind and model), up to max_batch.

In memory for now: the durable store replaces the dicts below without changing this interface.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from lib.schemas import ErrorBody
from server import metrics
from server.jobs.job import Job

log = logging.getLogger("audiocraft.jobs")

BatchRunner = Callable[[list[Job]], None]


class QueueFull(Exception):
    def __init__(self, depth: int, retry_after_s: int):
        super().__init__(f"the queue is full ({depth} jobs waiting)")
        self.depth = depth
        self.retry_after_s = retry_after_s


class JobNotFound(LookupError):
    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


class Scheduler:
    def __init__(self, run_batch: BatchRunner, queue_depth: int, max_batch: int, keep_finished: int = 1000):
        self._run_batch = run_batch
        self.queue_depth = queue_depth
        self.max_batch = max_batch
        self._keep_finished = keep_finished
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._batch_seconds: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="audiocraft-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let the running batch finish (up to timeout_s); queued jobs stay queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- submission and queries ------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._cond:
            if len(self._queue) >= self.queue_depth:
                metrics.JOBS_REJECTED.inc()
                raise QueueFull(len(self._queue), self._retry_after_s())
            self._jobs[job.id] = job
            self._queue.append(job)
            self._queue.sort(key=lambda j: (j.priority, j.created_at))
            metrics.JOBS_SUBMITTED.labels(job.kind).inc()
            metrics.QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def position(self, job: Job) -> int | None:
        with self._cond:
            return self._queue.index(job) if job in self._queue else None

    def list(self, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        jobs = sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)
        if state is not None:
            jobs = [j for j in jobs if j.state == state]
        return jobs[offset : offset + limit], len(jobs)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                metrics.QUEUE_DEPTH.set(len(self._queue))
                job.finish("cancelled")
                metrics.JOBS_FINISHED.labels(job.kind, "cancelled").inc()
                return job
        # Running: the decode loop stops at its next step.
        job.cancel_requested.set()
        return job

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counts(self) -> tuple[int, int]:
        return len(self._queue), len(self._running)

    async def wait(self, job: Job) -> Job:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        job.on_done(wake)
        await done
        return job

    # -- the worker ------------------------------------------------------------------------
    def _retry_after_s(self) -> int:
        recent = self._batch_seconds[-10:]
        per_batch = sum(recent) / len(recent) if recent else 10.0
        return max(1, round(per_batch * len(self._queue) / self.max_batch))

    def _take_batch(self) -> list[Job]:
        head = self._queue[0]
        batch = [j for j in self._queue if j.kind == head.kind and j.model == head.model][: self.max_batch]
        for job in batch:
            self._queue.remove(job)
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._take_batch()
                self._running = batch
                metrics.QUEUE_DEPTH.set(len(self._queue))
                metrics.RUNNING.set(len(batch))
            started = time.perf_counter()
            metrics.BATCH_SIZE.observe(len(batch))
            try:
                self._run_batch(batch)
            except Exception:  # the worker must survive anything one batch does
                log.exception("batch failed")
                for job in batch:
                    job.finish("failed", ErrorBody(code="generation_failed", message="internal error; see logs"))
            finally:
                elapsed = time.perf_counter() - started
                self._batch_seconds = (self._batch_seconds + [elapsed])[-50:]
                for job in batch:
                    metrics.JOBS_FINISHED.labels(job.kind, job.state).inc()
                with self._cond:
                    self._running = []
                    metrics.RUNNING.set(0)
                    self._forget_old()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job.id]
