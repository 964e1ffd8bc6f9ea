"""Multi-Band Diffusion: the published checkpoint, converted on first load, loaded as a DiffusionDecoder.

The hub repo (facebook/multiband-diffusion) keeps its checkpoint as AudioCraft wrote it; the first
load converts it (server/models/convert/mbd_checkpoint.py) into a config and a safetensors file
beside it in the hub cache, which is what every later load reads:

    models--facebook--multiband-diffusion/
        snapshots/<rev>/mbd_musicgen_32khz.th           the original
        converted/mbd-v<N>-<rev>/mbd_config.json, mbd.safetensors
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lib.catalogue import ModelSpec
from server.models.convert.cache import converted_copy
from server.models.convert.mbd_checkpoint import CONFIG_FILE, MUSICGEN_FILE, WEIGHTS_FILE, convert_checkpoint
from server.models.loaded import Described, storage_bytes

if TYPE_CHECKING:
    from server.engine.mbd.build import Bands
    from server.engine.mbd.diffusion import MultiBand

# Bump when the conversion's output changes.
CONVERTER_VERSION = 1


@dataclass(kw_only=True)
class DiffusionDecoder(Described):
    """An MBD checkpoint in memory: its bands' modules and the sampler over them (always float32)."""

    modules: Bands = field(repr=False)
    multiband: MultiBand = field(repr=False)

    @property
    def sample_rate(self) -> int:
        return self.multiband.sample_rate

    def memory_bytes(self) -> int:
        return storage_bytes(list(self.modules.state_dict().values()))


def converted_dir(snapshot: Path) -> Path:
    return snapshot.parent.parent / "converted" / f"mbd-v{CONVERTER_VERSION}-{snapshot.name}"


def ensure_converted(snapshot: Path) -> Path:
    checkpoint = snapshot / MUSICGEN_FILE
    return converted_copy(
        converted_dir(snapshot), CONFIG_FILE, lambda out: convert_checkpoint(checkpoint, out), checkpoint
    )


def load_folder(spec: ModelSpec, folder: Path, source: Path, device: torch.device) -> DiffusionDecoder:
    from safetensors.torch import load_file

    from server.engine.mbd.build import build_bands, multiband

    started = time.perf_counter()
    config = json.loads((folder / CONFIG_FILE).read_text())
    if int(config["sample_rate"]) != spec.sample_rate:
        raise ValueError(f"{source} holds a {config['sample_rate']} Hz MBD; {spec.name} is {spec.sample_rate} Hz")
    modules = build_bands(config)
    modules.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    modules.to(device).eval()
    return DiffusionDecoder(
        spec=spec, device=device, precision="float32", source=source, modules=modules,
        multiband=multiband(config, modules), load_time_s=time.perf_counter() - started,
    )  # fmt: skip


def load_mbd(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> DiffusionDecoder:
    """Float32 whatever `precision` says: the sampler's arithmetic is AudioCraft's in float32."""
    return load_folder(spec, ensure_converted(snapshot), snapshot, device)
