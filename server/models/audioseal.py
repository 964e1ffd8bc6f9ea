"""AudioSeal: its published checkpoints, converted once (server/models/convert/audioseal.py) into a
copy beside them in the hub cache, loaded as a WatermarkModel: the generator and the detector.

    models--facebook--audioseal/
        snapshots/<rev>/generator_base.pth, detector_base.pth (, base.yaml)   the original
        converted/audioseal-v<N>-<rev>/generator.safetensors, detector.safetensors, watermark.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.loaded import WatermarkModel

# Bump when the conversion's output changes.
CONVERTER_VERSION = 1


def converted_dir(snapshot: Path) -> Path:
    return snapshot.parent.parent / "converted" / f"audioseal-v{CONVERTER_VERSION}-{snapshot.name}"


def ensure_converted(snapshot: Path) -> Path:
    from server.models.convert.audioseal import OUTPUT_FILES, convert_snapshot
    from server.models.convert.cache import converted_copy

    return converted_copy(
        converted_dir(snapshot), OUTPUT_FILES[-1], lambda out: convert_snapshot(snapshot, out), snapshot
    )


def load_audioseal(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> WatermarkModel:
    from safetensors.torch import load_file

    from server.engine.watermark import Detector, Generator, WatermarkConfig

    started = time.perf_counter()
    folder = ensure_converted(snapshot)
    config = WatermarkConfig.from_json(json.loads((folder / "watermark.json").read_text()))
    modules = []
    for cls, file in ((Generator, "generator.safetensors"), (Detector, "detector.safetensors")):
        # Built on the CPU, not on meta: transformers' convolutions keep their padding as buffers
        # outside the state dict. The model is small; its random init costs little.
        module = cls(config)
        module.load_state_dict(load_file(str(folder / file)), strict=True)
        modules.append(module.to(device).eval())
    generator, detector = modules
    return WatermarkModel(
        spec=spec,
        generator=generator,
        detector=detector,
        device=device,
        source=snapshot,
        load_time_s=time.perf_counter() - started,
    )
