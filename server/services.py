"""Wires the parts together: settings -> model registry -> job scheduler. HTTP holds one of these."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lib.settings import Settings
from server.engine.registry import ModelRegistry
from server.jobs.artifacts import ArtifactStore
from server.jobs.runner import BatchRunner
from server.jobs.scheduler import Scheduler
from server.jobs.store import JobStore


@dataclass
class Services:
    settings: Settings
    registry: ModelRegistry
    scheduler: Scheduler
    started_at: float = field(default_factory=time.time)
    ready: bool = False

    @property
    def limits(self) -> dict[str, float]:
        """Validation context for request schemas: the limits that come from settings."""
        return {"max_duration_s": self.settings.max_duration_s, "max_prompt_chars": self.settings.max_prompt_chars}

    def start(self) -> None:
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self.scheduler.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.scheduler.stop(self.settings.stop_timeout_s)


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
    return Services(settings=settings, registry=registry, scheduler=scheduler)
