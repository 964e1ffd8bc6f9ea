"""The download lane: model downloads into the hub cache, a few at a time, one per model.

A download is a job like any other (GET /api/jobs/{id}, its SSE events, DELETE to cancel) of kind
"download", with byte counts in its `download` detail. Serving joins a running download of the same
model instead of queueing a second (`Scheduler.find`). A download the server stops in the middle
stays 'running' in the store and runs again at the next start, resuming from its partial files
(server/hub/download.py). Torch-free.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lib.catalogue import get_spec
from lib.errors import ServiceError
from lib.files import MODELS_DIR, disk_full, no_space
from lib.schemas import DownloadProgress
from lib.settings import Settings
from server.hub import download
from server.jobs.job import Job
from server.jobs.kinds import DOWNLOAD
from server.jobs.lane import WorkerLane, failure

log = logging.getLogger("audiocraft.downloads")

KIND = "download"


class DownloadLane(WorkerLane):
    name = "download"
    kinds = DOWNLOAD

    def __init__(self, settings: Settings, workers: int = 2):
        super().__init__(workers)
        self.settings = settings

    def recover(self, job: Job) -> None:
        log.warning("download %s of %s was interrupted; resuming it from its partial files", job.id, job.model)

    def stopping(self) -> None:
        """Downloads stop where they are at once (their partial files stay for the next start)."""
        for job in self.running():
            job.interrupted.set()

    def run(self, job: Job) -> None:
        spec = get_spec(job.model)
        queue = self.queue
        stop = _When(
            lambda: job.cancel_requested.is_set() or job.interrupted.is_set() or bool(queue and queue.stopping)
        )
        job.detail = job.detail or DownloadProgress(job_id=job.id, bytes_done=0, bytes_total=0)

        def progress(done: int, total: int, name: str) -> None:
            job.detail = DownloadProgress(job_id=job.id, bytes_done=done, bytes_total=total, file=name)
            job.progress = min(0.99, done / total) if total else 0.0

        try:
            download.download_model(
                spec,
                self.settings.hub_cache,
                timeout_s=self.settings.download_timeout_s,
                progress=progress,
                cancelled=stop,
            )
        except download.DownloadCancelled:
            if not job.interrupted.is_set() and not (queue and queue.stopping):
                job.finish("cancelled")  # else left 'running': it resumes at the next start
        except ServiceError as exc:  # the hub refused or is unreachable, the models disk is full
            log.warning("download of %s failed: %s", spec.name, exc.message)
            job.finish("failed", exc)
        except Exception as exc:  # a bug or the disk: the job fails, the server goes on
            job.finish("failed", no_space(MODELS_DIR) if disk_full(exc) else failure(job, exc))
        else:
            job.finish("succeeded")


class _When(threading.Event):
    """An event that is set while `condition` holds: cancel by the user, or the server stopping."""

    def __init__(self, condition: Callable[[], bool]):
        super().__init__()
        self._condition = condition

    def is_set(self) -> bool:
        return self._condition()
