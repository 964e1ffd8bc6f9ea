"""Workers on the Redis queue: what each says of itself with its heartbeat, and where a job runs.

A worker's heartbeat key (`worker:{name}`, expiring after the visibility timeout) holds its
WorkerInfo: the models it has loaded, the models in its model cache, and each lane's slots. API
nodes report them in /health and answer "is this model installed?" from them. Workers read them to
place the jobs of the lanes that load a model (Lane.loads_models):

- **Not in this worker's cache:** the job is left to a worker whose cache has the model. When no live
  worker has it, each has looked at its cache since the job became ready (so a download that just
  finished elsewhere is not missed), and the job has been ready for FAIL_AFTER_S (so a worker that is
  starting beside this one has said it is there), the job fails with a message that says so. It never
  waits for ever for a worker that will not come.
- **In the cache here, but loaded on another worker with a free slot for it:** that worker has the job
  to itself for AFFINITY_S (delay scheduling). Loading a model costs seconds to minutes; the wait costs
  at most this, and only when the other worker does not take it.

Torch-free: the API nodes read the same records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lib.errors import Conflict
from lib.schemas import WorkerInfo

AFFINITY_S = 2.0  # how long a worker that has the model loaded has its jobs to itself
INSTALLED_EVERY_S = 2.0  # how often a worker looks at its model cache for its heartbeat
FAIL_AFTER_S = 5.0  # a job no live worker can load fails once it has been ready this long

TAKE, LEAVE, FAIL = "take", "leave", "fail"


@dataclass(frozen=True)
class LocalModels:
    """A worker's own models, as its registry knows them (the composition root builds this)."""

    device: str
    loaded: Callable[[], list[str]]
    installed: Callable[[], list[str]]  # every model in the cache (for the heartbeat)
    is_installed: Callable[[str], bool]  # one model, looked at now (for placement)


class NoWorkerHasModel(Conflict, LookupError):
    code = "model_not_installed"

    def __init__(self, model: str, workers: Sequence[str]):
        hint = f"resource-audiocraft models pull {model}"
        where = f"{len(workers)} workers: {', '.join(sorted(workers))}" if workers else "no worker is running"
        super().__init__(
            f"no worker has model {model} installed ({where}); download it (it installs on a worker) or "
            "start a worker whose model cache has it",
            field="model",
            hint=hint,
        )


def can_take_now(info: WorkerInfo, lane: str, model: str) -> bool:
    """The worker's lane has a slot the job could use at once (a decode batch holds one model)."""
    slots = info.lanes.get(lane)
    return slots is not None and slots.busy < slots.capacity and (slots.busy == 0 or model in slots.models)


def place(
    lane: str,
    model: str,
    *,
    installed_here: bool,
    loaded_here: bool,
    others: Sequence[WorkerInfo],
    ready_since: float,
    now: float,
) -> str:
    """TAKE, LEAVE (to another worker) or FAIL (no worker can load the model), for a job of a lane that
    loads a model. `others`: the other live workers' reports."""
    peers = [w for w in others if lane in w.lanes]
    if not installed_here:
        if any(model in w.installed for w in peers):
            return LEAVE
        if any(w.installed_at < ready_since for w in peers):
            return LEAVE  # its news predates the job: ask again after its next look
        return FAIL if now - ready_since >= FAIL_AFTER_S else LEAVE
    if loaded_here or now - ready_since >= AFFINITY_S:
        return TAKE
    if any(model in w.loaded and can_take_now(w, lane, model) for w in peers):
        return LEAVE
    return TAKE


def parse(raw: str | None, now: float) -> WorkerInfo | None:
    """A heartbeat key's value; None for one this version cannot read (an older worker's timestamp)."""
    if not raw or not raw.startswith("{"):
        return None
    try:
        info = WorkerInfo.model_validate_json(raw)
    except ValueError:
        return None
    info.heartbeat_age_s = round(max(0.0, now - info.heartbeat_at), 3)
    return info


class InstalledCache:
    """The model cache's list for the heartbeat, looked at every INSTALLED_EVERY_S (a few stat calls
    per catalogue model; the heartbeat runs four times a second)."""

    def __init__(self, installed: Callable[[], list[str]]):
        self._installed = installed
        self.names: list[str] = []
        self.at = 0.0

    def get(self) -> tuple[list[str], float]:
        if time.time() - self.at >= INSTALLED_EVERY_S:
            at = time.time()  # before the look: a model installed during it counts as seen next time
            self.names, self.at = sorted(self._installed()), at
        return self.names, self.at
