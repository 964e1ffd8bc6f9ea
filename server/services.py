"""Wires the parts together: settings -> model registry -> job scheduler. HTTP holds one of these."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from lib.catalogue import ModelSpec
from lib.settings import Settings
from server.engine import threads
from server.hub import store
from server.jobs.artifacts import ArtifactStore
from server.jobs.downloads import Downloads
from server.jobs.runner import BatchRunner
from server.jobs.scheduler import Scheduler
from server.jobs.store import JobStore
from server.models.registry import ModelInUse, ModelRegistry


@dataclass
class Services:
    settings: Settings
    registry: ModelRegistry
    scheduler: Scheduler
    downloads: Downloads
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    _reaper: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def limits(self) -> dict[str, float]:
        """Validation context for request schemas: the limits that come from settings."""
        return {"max_duration_s": self.settings.max_duration_s, "max_prompt_chars": self.settings.max_prompt_chars}

    def start(self) -> None:
        threads.apply(self.settings.torch_threads)
        self.scheduler.start()
        self._stopped.clear()
        self._reaper = threading.Thread(target=self._unload_idle_models, name="audiocraft-idle", daemon=True)
        self._reaper.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self._stopped.set()
        self.downloads.stop()
        self.scheduler.stop(self.settings.stop_timeout_s)

    def _unload_idle_models(self) -> None:
        timeout = self.settings.model_idle_timeout_s
        if timeout <= 0:
            return
        while not self._stopped.wait(min(60.0, max(1.0, timeout / 4))):
            self.registry.unload_idle()

    def remove_model(self, spec: ModelSpec) -> int:
        """Unload the model and delete its files; ModelInUse while a job or a download needs it.
        Extra repos (AudioGen's T5) go too unless another installed model needs them. Returns bytes freed."""
        if self.registry.in_use(spec.name) or spec.name in self.scheduler.busy_models():
            raise ModelInUse(f"{spec.name} is in use by queued or running jobs", hint="retry when they finish")
        if self.downloads.active(spec.name) is not None:
            raise ModelInUse(
                f"{spec.name} is downloading", hint="cancel the download job first (DELETE /api/jobs/{id})"
            )
        self.registry.unload(spec.name)
        return store.remove_model(spec, self.settings.hub_cache)


def build_services(settings: Settings) -> Services:
    registry = ModelRegistry(settings)
    artifacts = ArtifactStore(settings.data_dir / "artifacts")
    scheduler = Scheduler(
        lambda kind, model: BatchRunner(registry, artifacts, kind, model),
        store=JobStore(settings.data_dir / "jobs.sqlite3"),
        artifacts=artifacts,
        queue_depth=settings.queue_depth,
        max_batch=settings.max_batch,
        retention_s=settings.job_retention_h * 3600,
    )
    downloads = Downloads(settings, scheduler)
    return Services(settings=settings, registry=registry, scheduler=scheduler, downloads=downloads)
