"""EnCodec: a transformers EncodecModel snapshot loaded as a CodecModel."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.loaded import CodecModel


def load_encodec(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> CodecModel:
    """Always float32, whatever `precision` says: codes are argmins over distances, half precision
    would change them, and the model is small."""
    from transformers import EncodecModel

    started = time.perf_counter()
    model = EncodecModel.from_pretrained(snapshot, dtype=torch.float32, local_files_only=True)
    model.to(device).eval()
    config = model.config
    if int(config.sampling_rate) != spec.sample_rate or int(config.audio_channels) != spec.channels:
        raise ValueError(
            f"{snapshot} holds a {config.sampling_rate} Hz, {config.audio_channels}-channel EnCodec; "
            f"{spec.name} is {spec.sample_rate} Hz, {spec.channels}-channel"
        )
    return CodecModel(spec=spec, model=model, device=device, source=snapshot, load_time_s=time.perf_counter() - started)
