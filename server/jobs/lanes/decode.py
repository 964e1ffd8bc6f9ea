"""The decode lane: generation jobs (music, sound, melody, continuation), in one continuous batch.

One thread keeps the batch: between two decode steps it takes queued jobs of the batch's kind and
model (up to max_batch), as long as the most urgent ready generation job is one of them; finished
and cancelled jobs leave at once. When the batch empties, the next batch is for the most urgent
job's model. The runner (server/jobs/lanes/batch.py) does the engine's work; this module only
decides when, and stays torch-free.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Protocol

from lib.catalogue import get_spec
from lib.errors import Internal, ServiceError
from server import metrics
from server.jobs.feed import streams
from server.jobs.job import Job
from server.jobs.kinds import DECODE, batch_group
from server.jobs.lane import RETRY_S, Lane, failure

log = logging.getLogger("audiocraft.jobs")


class Runner(Protocol):
    """The running batch of one (kind, model): what the lane needs of BatchRunner."""

    def accepts(self, job: Job) -> bool: ...
    def __len__(self) -> int: ...
    def admit(self, job: Job) -> None: ...
    def step(self) -> None: ...
    def interrupt(self) -> list[Job]: ...
    def fail_all(self, error: ServiceError) -> None: ...
    @property
    def jobs(self) -> list[Job]: ...


RunnerFactory = Callable[[str, str], Runner]  # (kind, model) -> runner


class DecodeLane(Lane):
    name = "decode"
    loads_models = True
    kinds = DECODE

    def __init__(self, new_runner: RunnerFactory, max_batch: int):
        super().__init__()
        self._new_runner = new_runner
        self.max_batch = self.capacity = max_batch
        self._runner: Runner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="audiocraft-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self.queue is not None
        if self._thread is not None:
            self._thread.join(max(0.0, self.queue.time_left_s()) + 30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def running(self) -> list[Job]:
        runner = self._runner
        return runner.jobs if runner is not None else []

    def group(self, job: Job) -> Hashable:
        return batch_group(job)

    def _busy(self) -> bool:
        return self._runner is not None and len(self._runner) > 0

    def _admissions(self) -> list[Job]:
        """Queued jobs that join the batch now: any the batch accepts while it runs (if the most
        urgent one is among them), else the most urgent job and those of its kind and model."""
        assert self.queue is not None
        if self._busy():
            runner = self._runner
            assert runner is not None
            room = self.max_batch - len(runner)
            if room <= 0:
                return []
            return self.queue.take(self, room, block=False, fits=lambda _head, job: runner.accepts(job))
        joining = self.queue.take(
            self, self.max_batch, block=True, fits=lambda head, job: (job.kind, job.model) == (head.kind, head.model)
        )
        if joining:
            self._runner = self._new_runner(joining[0].kind, joining[0].model)
        return joining

    def _work(self) -> None:
        queue = self.queue
        assert queue is not None
        while True:
            if queue.stopping and (not self._busy() or queue.past_deadline()):
                if self._busy():
                    for job in self._runner.interrupt():
                        log.warning("job %s interrupted by shutdown; it runs again at the next start", job.id)
                return
            try:
                joining = self._admissions()
            except Exception:  # the lane outlives its queue's bad moments (the store failing)
                log.exception("the decode lane could not take work; trying again")
                queue.pause(RETRY_S)
                continue
            for job in joining:
                try:
                    if streams(job.request):  # its audio goes out as it is made
                        job.feed = queue.open_feed(job, get_spec(job.model).channels)
                    self._runner.admit(job)
                except Exception as exc:  # taken, so it ends here: never left 'running'
                    job.finish("failed", failure(job, exc))
            if joining:
                metrics.BATCH_SIZE.observe(len(self._runner))
            metrics.RUNNING.set(len(self._runner) if self._runner is not None else 0)
            if not self._busy():
                continue
            try:
                self._runner.step()
            except Exception:  # the lane must survive anything one batch does
                log.exception("decode step failed")
                self._runner.fail_all(Internal("generation failed: internal error; see logs", code="generation_failed"))
