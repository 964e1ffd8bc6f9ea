"""The dataset lane: builds datasets (POST /api/datasets, job kind "dataset").

A dataset build is a job because computing codes needs the model's EnCodec, which only a node that
runs models holds (an API node queues the job; a worker builds it), and because encoding minutes of
audio takes long enough that the request may be asynchronous. It has its own lane so a long training
run never holds it up. The uploads are the job's artifacts until it ends, so a build a restart cut
off runs again from them. The model is leased while it runs, so the memory budget never unloads it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from lib.errors import ServiceError
from lib.finetune import DatasetJob
from lib.settings import Settings
from server.engine import threads
from server.finetune import build
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.kinds import DATASET
from server.jobs.lane import WorkerLane
from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft.finetune")


class DatasetLane(WorkerLane):
    name = "dataset"
    loads_models = True  # the codec of job.model encodes the files
    kinds = DATASET

    def __init__(self, registry: ModelRegistry, artifacts: ArtifactStore, settings: Settings):
        super().__init__(1)
        self.registry = registry
        self.artifacts = artifacts
        self.settings = settings

    def run(self, job: Job) -> None:
        try:
            threads.in_own_thread(self._build, job)
        except _Stopped:
            job.finish("cancelled")
        except ServiceError as exc:  # no usable file, the name taken, the model not loading, the disk full
            job.finish("failed", exc)
        else:
            job.finish("succeeded")
        self.artifacts.remove(job.id)

    def _build(self, job: Job) -> None:
        request: DatasetJob = job.request
        uploads = self.artifacts.path(job.id, "x").parent
        work = Path(tempfile.mkdtemp(prefix=".dataset-unpack-", dir=self.settings.data_dir))
        try:
            folder = build.unpack(uploads, work)

            def progress(done: int, total: int) -> None:
                job.progress = min(0.99, done / total) if total else 0.0
                if job.cancel_requested.is_set():
                    raise _Stopped

            lm = self.registry.acquire(job.model)
            try:
                build.build(lm, request, folder, self.settings.data_dir, job.id, progress)
            finally:
                self.registry.release(lm.spec.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class _Stopped(Exception):
    """Raised from the progress callback between files: the job was cancelled (nothing is installed)."""
