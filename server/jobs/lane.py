"""A lane: the part of the job queue that runs some kinds of job.

Every task is a job in the one queue (server/jobs/queue.py: SQLite or Redis): it is stored, listed, cancelled
and followed the same way whatever its kind. What differs goes in a lane: which kinds it owns (and
the request schema each carries), how its jobs run, how they come back after a restart, and how
many run at once. The queue knows lanes only through this class, so adding a lane (mixing,
fine-tuning) touches no other lane.

A lane's threads take work with `queue.take(...)`, which hands out the most urgent ready jobs of
the lane's kinds and marks them running; they end jobs with `job.finish(...)`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel

from lib.errors import Internal, ServiceError
from lib.files import TEMP_DIR, disk_full, no_space
from server.jobs.job import Job

if TYPE_CHECKING:
    from server.jobs.queue import JobQueue

log = logging.getLogger("audiocraft.jobs")

RETRY_S = 1.0  # a lane whose queue could not be read (the store failing) tries again after this


def failure(job: Job, exc: Exception) -> ServiceError:
    """What a job that raised `exc` fails with: the error itself when it is the service's, a full
    disk as a 507 (the temporary dir's, when nothing more specific caught it), else a 500 whose
    details go to the log only."""
    if isinstance(exc, ServiceError):
        return exc
    if disk_full(exc):
        return no_space(TEMP_DIR)
    log.error("%s job %s failed", job.kind, job.id, exc_info=exc)
    return Internal(f"{job.kind} failed: internal error; see the server log")


class Lane(ABC):
    name: str = "lane"
    kinds: Mapping[str, type[BaseModel]] = {}  # job kind -> the request schema it carries
    capacity: int = 1  # jobs it runs at once
    loads_models: bool = False  # its jobs load job.model: on Redis, placed on a worker that has it

    def __init__(self) -> None:
        self.queue: JobQueue | None = None

    def bind(self, queue: JobQueue) -> None:
        self.queue = queue

    def recover(self, job: Job) -> None:
        """Called at start for each job of the lane's kinds that was queued or running when the last
        process ended, before any runs. By default it simply runs again (same id, same seed)."""
        return None

    @abstractmethod
    def start(self) -> None: ...

    def stopping(self) -> None:
        """The queue has begun to stop (every lane hears it before any is joined): let go at once of
        work that need not finish, such as downloads, which resume at the next start."""
        return None

    @abstractmethod
    def stop(self) -> None:
        """Return once the lane's threads have ended: the queue has set its stop deadline; running
        work may finish until then, and what is still running after it is left unfinished (the
        store says 'running', so it runs again at the next start)."""

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def running(self) -> list[Job]:
        """The lane's jobs that run now."""

    def group(self, job: Job) -> Hashable | None:
        """Jobs of different groups never run together: the lane drains between them (the decode
        batch holds one kind and model). None: any job runs beside any other."""
        return None


class WorkerLane(Lane):
    """A lane of `workers` threads, each running one job at a time (codec, downloads)."""

    def __init__(self, workers: int = 1):
        super().__init__()
        self.workers = self.capacity = workers
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()

    @abstractmethod
    def run(self, job: Job) -> None:
        """Run the job to its end (job.finish), or return with it unfinished when it is interrupted."""

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name=f"audiocraft-{self.name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        assert self.queue is not None
        for thread in self._threads:
            thread.join(max(0.0, self.queue.time_left_s()) + 30)

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and bool(self._threads)

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def _work(self) -> None:
        queue = self.queue
        assert queue is not None
        while True:
            try:
                taken = queue.take(self, limit=1, block=True)
            except Exception:  # the lane outlives its queue's bad moments (the store failing)
                log.exception("the %s lane could not take work; trying again", self.name)
                queue.pause(RETRY_S)
                continue
            if not taken:
                return  # stopping
            job = taken[0]
            with self._lock:
                self._running[job.id] = job
            try:
                self.run(job)
            except Exception as exc:  # the lane must survive anything one job does
                job.finish("failed", failure(job, exc))
            finally:
                with self._lock:
                    self._running.pop(job.id, None)
