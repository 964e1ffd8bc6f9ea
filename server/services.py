"""What the HTTP layer holds: the settings, the model registry and the job queue, started and stopped
together. Built by the composition root (server/main.py build_services) for the process's role;
torch-free itself."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lib.catalogue import ModelSpec
from lib.schemas import CONTEXT_SETTINGS, CpuReport
from lib.settings import Settings
from server.engine import threads
from server.hub import store
from server.jobs.lanes.download import KIND as DOWNLOAD
from server.jobs.queue import JobQueue
from server.models.errors import ModelInUse

if TYPE_CHECKING:
    from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft")

CLEAN_UP_EVERY_S = 3600.0  # finished jobs past their retention go this often (and at start)


@dataclass
class Services:
    settings: Settings
    registry: ModelRegistry  # ModelsElsewhere on an API node
    scheduler: JobQueue  # the embedded Scheduler (SQLite) or RedisScheduler
    runs_models: bool = True  # False on an API node (`serve --role api`): no torch here
    cpu: CpuReport | None = None  # the CPU and its kernels, where models run on it (server/engine/cpu.py)
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    _reaper: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def context(self) -> dict[str, Any]:
        """The validation context of the request schemas: what they check that comes from settings (the
        lib/schemas CONTEXT_SETTINGS). The OpenAPI document is written with the same values."""
        return {key: getattr(self.settings, key) for key in CONTEXT_SETTINGS}

    def start(self) -> None:
        if self.runs_models:
            threads.apply(self.settings.torch_threads)
        self.scheduler.start()
        self._stopped.clear()
        self._reaper = threading.Thread(target=self._housekeeping, name="audiocraft-idle", daemon=True)
        self._reaper.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self._stopped.set()
        self.scheduler.stop(self.settings.stop_timeout_s)

    def _housekeeping(self) -> None:
        """Unload models idle past settings.model_idle_timeout_s; store the job ends a full disk held
        back; drop jobs past their retention. A pass that fails (the disk full) is logged and the
        next one tries again."""
        timeout = self.settings.model_idle_timeout_s
        period = min(60.0, max(1.0, timeout / 4)) if timeout > 0 else 60.0
        cleaned = time.monotonic()
        while not self._stopped.wait(period):
            try:
                if timeout > 0:
                    self.registry.unload_idle()
                self.scheduler.save_unsaved()
                if time.monotonic() - cleaned > CLEAN_UP_EVERY_S:
                    self.scheduler.clean_up()
                    cleaned = time.monotonic()
            except Exception:
                log.exception("housekeeping failed; it tries again in %g s", period)

    def load_model(self, spec: ModelSpec) -> None:
        """Blocking: load the model (the registry makes room first)."""
        threads.in_own_thread(self.registry.get, spec.name)

    def remove_model(self, spec: ModelSpec) -> int:
        """Blocking: unload the model and delete its files; ModelInUse while a job or a download needs
        it. Extra repos (AudioGen's T5) go too unless another installed model needs them. Bytes freed."""
        downloading = self.scheduler.find(DOWNLOAD, spec.name)
        if downloading is not None:
            raise ModelInUse(
                f"{spec.name} is downloading", hint=f"cancel the download job first (DELETE /api/jobs/{downloading.id})"
            )
        if self.registry.in_use(spec.name) or spec.name in self.scheduler.busy_models():
            raise ModelInUse(f"{spec.name} is in use by queued or running jobs", hint="retry when they finish")
        self.registry.unload(spec.name)
        freed = store.remove_model(spec, self.settings.hub_cache)
        if spec.base is not None:
            from server.hub import finetuned

            finetuned.refresh(self.settings.hub_cache)
        return freed
