"""Model downloads as jobs: start one, join the running one, or say what to run instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lib.catalogue import ModelSpec
from lib.schemas import DownloadProgress, DownloadRequest
from server.hub import download, store
from server.jobs.job import PRIORITY_BATCH, Job
from server.jobs.lanes.download import KIND

if TYPE_CHECKING:
    from server.services import Services


def active(svc: Services, spec: ModelSpec) -> Job | None:
    """The model's download that is queued or running, if any."""
    return svc.scheduler.find(KIND, spec.name)


def start(svc: Services, spec: ModelSpec) -> Job:
    """The running download of the model (two requests for one model: one download), or a new one."""
    running = active(svc, spec)
    if running is not None:
        return running
    if svc.runs_models:  # an API node's download runs on a worker, into the worker's cache
        download.check_writable(svc.settings.hub_cache)
    job = Job(kind=KIND, model=spec.name, request=DownloadRequest(model=spec.name), seed=0, priority=PRIORITY_BATCH)
    job.detail = DownloadProgress(job_id=job.id, bytes_done=0, bytes_total=0)
    return svc.scheduler.submit_unless_running(job)


def require(svc: Services, spec: ModelSpec) -> Job | None:
    """For a request that needs the model: None when it is installed or loaded; else the download it
    must wait for (auto_download), or ModelNotInstalled with the command to run (also when
    huggingface_hub is in offline mode: HF_HUB_OFFLINE=1). On an API node, installed means in a
    live worker's cache; before any worker has reported (a cluster starting) the job is taken and
    waits for one, and the workers place it or fail it (server/jobs/cluster/workers.py)."""
    if svc.registry.is_loaded(spec.name) or svc.registry.is_installed(spec) or not svc.registry.knows_installed():
        return None
    if not svc.settings.auto_download or download.offline():
        raise store.ModelNotInstalled(spec, svc.settings.hub_cache)
    return start(svc, spec)
