"""Models in memory: loaded on first use, kept for the next request."""

from __future__ import annotations

import threading
import time

import torch

from lib.catalogue import ModelSpec, get_spec
from lib.settings import Settings
from server.engine import store
from server.engine.codec.codec import load_encodec
from server.engine.device import pick_device, pick_dtype
from server.engine.errors import ModelLoadFailed, UnsupportedRequest
from server.engine.loaded import LoadedModel, load_musicgen

_LOADERS = {"musicgen": load_musicgen, "musicgen-melody": load_musicgen, "encodec": load_encodec}


class ModelRegistry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.dtype, self.device)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def spec(self, name: str) -> ModelSpec:
        """Catalogue entry of an installed model; raises UnknownModel / ModelNotInstalled."""
        spec = get_spec(name)
        if spec.name not in self._loaded and store.snapshot_dir(spec, self.settings.hub_cache) is None:
            raise store.ModelNotInstalled(spec)
        return spec

    def get(self, name: str) -> LoadedModel:
        spec = self.spec(name)
        with self._lock:
            lm = self._loaded.get(spec.name)
            if lm is None:
                lm = self._load(spec)
                self._loaded[spec.name] = lm
        lm.last_used = time.time()
        return lm

    def _load(self, spec: ModelSpec) -> LoadedModel:
        loader = _LOADERS.get(spec.kind)
        if loader is None:
            raise UnsupportedRequest(f"{spec.name} ({spec.kind}) is not supported by this build yet", field="model")
        snapshot = store.snapshot_dir(spec, self.settings.hub_cache)
        if snapshot is None:
            raise store.ModelNotInstalled(spec)
        try:
            dtype = self.dtype_for(spec)
        except ValueError as exc:
            raise ModelLoadFailed(
                f"{spec.name}: {exc}", hint="change AUDIOCRAFT_MODEL_DTYPE or AUDIOCRAFT_DTYPE for this device"
            ) from exc
        try:
            return loader(spec, snapshot, self.device, dtype)
        except Exception as exc:  # safetensors, pickle, config errors...: all mean "these files don't load"
            raise ModelLoadFailed(
                f"could not load {spec.name} from {snapshot}: {exc}",
                hint=f"the files may be damaged; reinstall with: resource-audiocraft models pull {spec.name}",
            ) from exc

    def dtype_for(self, spec: ModelSpec) -> torch.dtype:
        """The model's own precision setting (settings.model_dtype), else the global one."""
        setting = self.settings.dtype_for(spec.name)
        return self.dtype if setting == self.settings.dtype else pick_dtype(setting, self.device)

    def loaded(self) -> list[LoadedModel]:
        # A copy, read without the lock: /health must never wait on a model load.
        return list(self._loaded.values())

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def unload(self, name: str) -> bool:
        with self._lock:
            lm = self._loaded.pop(name, None)
        if lm is None:
            return False
        del lm
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True
