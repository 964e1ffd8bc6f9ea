"""Models in memory: loaded on first use, kept for the next request, unloaded to make room.

Loaded models share a memory budget (settings.memory_budget_gb). Loading past it first unloads the
least recently used idle models; a model is idle when no job holds a lease on it (`acquire` /
`release`, taken by the decode batch for as long as it runs). Models nobody used for
settings.model_idle_timeout_s are unloaded by `unload_idle`, which the services call periodically.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import torch

from lib.catalogue import CATALOGUE, ModelSpec, get_spec
from lib.settings import Settings
from server.engine.errors import UnsupportedRequest
from server.hub import store
from server.models.device import pick_device, pick_precision
from server.models.errors import AdapterMismatch, MemoryBudgetFull, ModelInUse, ModelLoadFailed
from server.models.heap import map_big_blocks, return_freed_memory
from server.models.loaded import ResidentModel
from server.models.loaders import LOADERS

# One model load at a time in the process, whichever registry or lane asks. transformers'
# from_pretrained is not thread-safe: it swaps PreTrainedModel.tie_weights (and torch's init
# functions) for no-ops while it loads and puts back what it found, so two loads that overlap can
# leave the no-op in place for good, and every later load of a model with tied weights (T5's
# embed_tokens) keeps them on the meta device. The full suite caught it (two test clients' lanes
# loading at once); in the service, two lanes loading their models at the same moment would do it.
LOADING = threading.RLock()

log = logging.getLogger("audiocraft.engine")

# Memory a loaded model takes per byte of its fp32 weights on disk, by decoder precision: a guess
# made before loading, to unload others first; the real figure is checked once it is loaded.
_LOAD_FACTOR = {"float32": 1.0, "bfloat16": 0.55, "float16": 0.55}
_INT8_LOAD_FACTOR = 0.35


def device_memory_bytes(device: torch.device) -> int:
    """All the memory of the device: physical RAM, or the GPU's memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class ModelRegistry:
    def __init__(self, settings: Settings):
        map_big_blocks()
        self.settings = settings
        self.device = pick_device(settings.device)
        self.precision = pick_precision(settings.dtype, self.device)
        self._loaded: dict[str, ResidentModel] = {}
        self._lock = threading.RLock()
        self._leases: dict[str, int] = {}
        self._memory: dict[str, int] = {}  # measured once per load: what each loaded model holds

    @property
    def budget_bytes(self) -> int:
        """settings.memory_budget_gb, or (0 = auto) three quarters of the device's memory."""
        if self.settings.memory_budget_gb > 0:
            return int(self.settings.memory_budget_gb * 1e9)
        return int(device_memory_bytes(self.device) * 0.75)

    def spec(self, name: str) -> ModelSpec:
        """Catalogue entry of an installed model; raises UnknownModel / ModelNotInstalled."""
        spec = get_spec(name)
        if spec.name not in self._loaded and store.snapshot_dir(spec, self.settings.hub_cache) is None:
            raise store.ModelNotInstalled(spec)
        return spec

    def is_installed(self, spec: ModelSpec) -> bool:
        """In this process's model cache, whole."""
        return store.is_installed(spec, self.settings.hub_cache)

    def knows_installed(self) -> bool:
        return True  # its own cache

    def installed(self) -> list[str]:
        return [spec.name for spec in CATALOGUE.values() if self.is_installed(spec)]

    def get(self, name: str) -> ResidentModel:
        spec = self.spec(name)
        with self._lock:
            lm = self._loaded.get(spec.name)
            if lm is None:
                if self._make_room(self._estimate_bytes(spec), keep=spec.name):
                    self._free()
                lm = self._load(spec)
                self._loaded[spec.name] = lm
                self._memory[spec.name] = lm.memory_bytes()
                # The estimate may have been low: the real size decides what else must go.
                if self._make_room(0, keep=spec.name):
                    self._free()
            lm.last_used = time.time()
        return lm

    # -- leases: a model under running work is never unloaded -----------------------------------
    def acquire(self, name: str) -> ResidentModel:
        """get() plus a lease: the model stays loaded until release()."""
        with self._lock:
            lm = self.get(name)
            self._leases[lm.spec.name] = self._leases.get(lm.spec.name, 0) + 1
            return lm

    def release(self, name: str) -> None:
        with self._lock:
            left = self._leases.get(name, 0) - 1
            if left > 0:
                self._leases[name] = left
            else:
                self._leases.pop(name, None)
            lm = self._loaded.get(name)
            if lm is not None:
                lm.last_used = time.time()

    def in_use(self, name: str) -> int:
        return self._leases.get(name, 0)

    def memory_of(self, name: str) -> int | None:
        return self._memory.get(name) if name in self._loaded else None

    # -- the budget ------------------------------------------------------------------------------
    def _estimate_bytes(self, spec: ModelSpec) -> int:
        snapshot = store.snapshot_dir(spec, self.settings.hub_cache)
        if snapshot is None:
            return 0
        on_disk = sum(p.stat().st_size for p in snapshot.iterdir() if p.suffix in (".safetensors", ".bin"))
        try:
            precision = self.precision_for(spec)
        except ValueError:
            return on_disk
        return int(on_disk * _LOAD_FACTOR.get(precision, _INT8_LOAD_FACTOR))

    def _make_room(self, needed: int, keep: str) -> int:
        """Unload idle models, least recently used first, until `needed` more bytes fit the budget.
        Returns how many were unloaded."""
        budget = self.budget_bytes
        dropped = 0
        while sum(self._memory.get(n, 0) for n in self._loaded) + needed > budget:
            idle = [lm for n, lm in self._loaded.items() if n != keep and not self._leases.get(n)]
            if not idle:
                break
            victim = min(idle, key=lambda lm: lm.last_used)
            log.info("unloading %s (least recently used) to stay within the memory budget", victim.spec.name)
            dropped += self._drop(victim.spec.name)
        used = sum(self._memory.get(n, 0) for n in self._loaded) + needed
        if used > budget and len(self._loaded) > (0 if needed else 1):
            busy = ", ".join(n for n in self._loaded if n != keep)
            if needed:
                raise MemoryBudgetFull(
                    f"loading this model would exceed the memory budget ({budget / 1e9:.3g} GB): {busy} in use",
                    hint="retry when their jobs finish, or raise AUDIOCRAFT_MEMORY_BUDGET_GB",
                )
            log.warning("over the memory budget (%.3g of %.3g GB): %s in use", used / 1e9, budget / 1e9, busy)
        return dropped

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload the models nobody used for settings.model_idle_timeout_s (0: never)."""
        timeout = self.settings.model_idle_timeout_s
        if timeout <= 0:
            return []
        now = time.time() if now is None else now
        with self._lock:
            stale = [n for n, lm in self._loaded.items() if not self._leases.get(n) and now - lm.last_used > timeout]
            for name in stale:
                log.info("unloading %s: idle for more than %g s", name, timeout)
                self._drop(name)
        if stale:
            self._free()
        return stale

    def _load(self, spec: ModelSpec) -> ResidentModel:
        loader = self._finetuned_loader if spec.base else LOADERS.get(spec.kind)
        if loader is None:
            raise UnsupportedRequest(f"{spec.name} ({spec.kind}) is not supported by this build yet", field="model")
        snapshot = store.snapshot_dir(spec, self.settings.hub_cache)
        if snapshot is None:
            raise store.ModelNotInstalled(spec)
        try:
            precision = self.precision_for(spec)
        except ValueError as exc:
            raise ModelLoadFailed(
                f"{spec.name}: {exc}", hint="change AUDIOCRAFT_MODEL_DTYPE or AUDIOCRAFT_DTYPE for this device"
            ) from exc
        try:
            with LOADING:
                return loader(spec, snapshot, self.device, precision)
        except (store.ModelNotInstalled, AdapterMismatch):
            raise  # a repo the model needs (AudioGen's T5, a fine-tune's base) is missing or not its own: a 409
        except ModelLoadFailed as exc:  # a loader that knows what went wrong (a cache that failed to read)
            log.error("could not load %s from %s: %s", spec.name, snapshot, exc.__cause__ or exc)
            raise ModelLoadFailed(f"could not load {spec.name}: {exc.message}", hint=exc.hint) from exc
        except Exception as exc:  # safetensors, pickle, config errors...: all mean "these files don't load"
            # The answer names the model, not the files (their paths are the host's): the log has both.
            log.error("could not load %s from %s: %s", spec.name, snapshot, exc)
            raise ModelLoadFailed(
                f"could not load {spec.name}: its files do not load ({type(exc).__name__}; the server log has more)",
                hint=f"the files may be damaged; reinstall with: resource-audiocraft models pull {spec.name}",
            ) from exc

    def _finetuned_loader(self, spec: ModelSpec, snapshot, device: torch.device, precision: str) -> ResidentModel:
        """A fine-tuned model: its base with the adapter merged (server/finetune/adapters.py)."""
        from server.finetune import adapters

        return adapters.load(spec, snapshot, self.settings.hub_cache, device, precision)

    def precision_for(self, spec: ModelSpec) -> str:
        """The model's own precision setting (settings.model_dtype), else the global one."""
        setting = self.settings.dtype_for(spec.name)
        return self.precision if setting == self.settings.dtype else pick_precision(setting, self.device)

    def loaded(self) -> list[ResidentModel]:
        # A copy, read without the lock: /health must never wait on a model load.
        return list(self._loaded.values())

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def unload(self, name: str) -> bool:
        """Unload an idle model and give its memory back; ModelInUse while a job holds it."""
        with self._lock:
            if self._leases.get(name):
                raise ModelInUse(f"{name} is in use by a running job", hint="retry when the job finishes")
            dropped = self._drop(name)
        if dropped:
            self._free()
        return dropped

    def _drop(self, name: str) -> bool:
        self._memory.pop(name, None)
        lm = self._loaded.pop(name, None)
        if lm is None:
            return False
        return True

    def _free(self) -> None:
        """Hand freed memory back: Python's cycles, glibc's heap, and the CUDA caching allocator."""
        return_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
