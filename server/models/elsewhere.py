"""The model registry of an API node (`serve --role api`): it holds no model and imports no torch;
the workers load the models their jobs need. It answers the registry's questions from the workers'
reports (their heartbeats: server/jobs/cluster/workers.py): a model is installed when a live worker's
cache has it. Nothing is loaded here, and a request to load a model here says where models live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lib.catalogue import ModelSpec
from lib.errors import Conflict
from lib.schemas import WorkerInfo
from lib.settings import Settings


@dataclass(frozen=True)
class NoDevice:
    type: str = "none"

    def __str__(self) -> str:
        return "none (an API node: models run on the workers)"


class ModelsElsewhere:
    def __init__(self, settings: Settings, workers: Callable[[], list[WorkerInfo] | None] = lambda: []):
        self.settings = settings
        self.device = NoDevice()
        self._workers = workers

    def is_installed(self, spec: ModelSpec) -> bool:
        return any(spec.name in w.installed for w in self._workers() or [])

    def knows_installed(self) -> bool:
        """A worker has reported its cache. Before that (a cluster starting), "not installed" is not
        known: a job is taken and waits for a worker, which places it or fails it."""
        return bool(self._workers())

    def installed(self) -> list[str]:
        return sorted({name for w in self._workers() or [] for name in w.installed})

    def loaded(self) -> list:
        return []

    def is_loaded(self, name: str) -> bool:
        return False

    def in_use(self, name: str) -> int:
        return 0

    def memory_of(self, name: str) -> int | None:
        return None

    def unload(self, name: str) -> bool:
        return False

    def unload_idle(self, now: float | None = None) -> list[str]:
        return []

    def get(self, name: str):
        raise Conflict(
            f"this node serves the API only and loads no model ({name} loads on a worker when a job needs it)",
            code="api_node",
            hint="send generation requests as usual: a worker loads the model for them",
        )
