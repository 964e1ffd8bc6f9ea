"""Download jobs: one per model at a time, each in its own thread, beside the decode worker.

A download is a job like any other (GET /api/jobs/{id}, its SSE events, DELETE to cancel) of kind
"download", with byte counts in `job.download`. Asking for a model that is already downloading
joins the running job. A job the server stops in the middle stays 'running' in the store and is
resumed at the next start, from the partial files (server/hub/download.py).
"""

from __future__ import annotations

import logging
import threading

from lib.catalogue import ModelSpec, get_spec
from lib.errors import Internal
from lib.schemas import DownloadProgress, DownloadRequest
from lib.settings import Settings
from server.hub import download, store
from server.jobs.job import PRIORITY_BATCH, Job
from server.jobs.scheduler import Scheduler

log = logging.getLogger("audiocraft.downloads")

KIND = "download"


class Downloads:
    def __init__(self, settings: Settings, scheduler: Scheduler):
        self.settings = settings
        self.scheduler = scheduler
        self._active: dict[str, Job] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False
        scheduler.register_side_kind(KIND, DownloadRequest, self._resume)
        scheduler.before_requeue = self._attach

    def active(self, name: str) -> Job | None:
        return self._active.get(name)

    def start(self, spec: ModelSpec) -> Job:
        """The running download of the model, or a new one."""
        with self._lock:
            job = self._active.get(spec.name)
            if job is not None:
                return job
            download.check_writable(self.settings.hub_cache)
            request = DownloadRequest(model=spec.name)
            job = Job(kind=KIND, model=spec.name, request=request, seed=0, priority=PRIORITY_BATCH)
            job.download = DownloadProgress(job_id=job.id, bytes_done=0, bytes_total=0)
            self.scheduler.add_side_job(job)
            self._run(job)
            return job

    def require(self, spec: ModelSpec) -> Job | None:
        """For a request that needs the model: None when it is installed; else the download it
        must wait for (auto_download), or ModelNotInstalled with the command to run (also when
        huggingface_hub is in offline mode: HF_HUB_OFFLINE=1)."""
        if store.is_installed(spec, self.settings.hub_cache):
            return None
        if not self.settings.auto_download or download.offline():
            raise store.ModelNotInstalled(spec, self.settings.hub_cache)
        return self.start(spec)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every download where it is; the jobs stay 'running' and resume at the next start."""
        with self._lock:
            self._stopping = True
            jobs = list(self._active.values())
            threads = list(self._threads)
        for job in jobs:
            job.interrupted.set()
        for thread in threads:
            thread.join(timeout_s)

    # -- internals -------------------------------------------------------------------------------
    def _attach(self, job: Job) -> None:
        """A recovered job whose model is not installed waits for its download again."""
        try:
            job.waits_for = self.require(get_spec(job.model))
        except (store.ModelNotInstalled, download.DownloadFailed):
            pass  # the runner fails it with the command to run

    def _resume(self, job: Job) -> None:
        log.warning("download %s of %s was interrupted; resuming it", job.id, job.model)
        with self._lock:
            self._run(job)

    def _run(self, job: Job) -> None:
        """Called with the lock held."""
        self._active[job.model] = job
        thread = threading.Thread(target=self._download, args=(job,), name=f"download-{job.model}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _download(self, job: Job) -> None:
        spec = get_spec(job.model)
        stop = _Either(job.cancel_requested, job.interrupted)
        self.scheduler.side_job_started(job)
        job.download = job.download or DownloadProgress(job_id=job.id, bytes_done=0, bytes_total=0)

        def progress(done: int, total: int, name: str) -> None:
            job.download = DownloadProgress(job_id=job.id, bytes_done=done, bytes_total=total, file=name)
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
            if not job.interrupted.is_set():
                job.finish("cancelled")
        except download.DownloadFailed as exc:
            log.warning("download of %s failed: %s", spec.name, exc.message)
            job.finish("failed", exc)
        except Exception as exc:  # a bug or the disk: the job fails, the server goes on
            log.exception("download of %s failed", spec.name)
            job.finish("failed", Internal(f"download of {spec.name} failed: {exc}", code="download_failed"))
        else:
            job.finish("succeeded")
        finally:
            with self._lock:
                if self._active.get(job.model) is job:
                    del self._active[job.model]


class _Either(threading.Event):
    """Set when either event is: cancel by the user, or interruption by shutdown."""

    def __init__(self, *events: threading.Event):
        super().__init__()
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)
