"""A model in memory: the transformers modules plus what the decode loop needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lib.catalogue import ModelSpec


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # MusicgenForConditionalGeneration / MusicgenMelodyForConditionalGeneration
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    source: Path
    load_time_s: float = 0.0
    last_used: float = field(default=0.0)

    @property
    def decoder_config(self):
        return self.model.config.decoder

    @property
    def num_codebooks(self) -> int:
        return int(self.decoder_config.num_codebooks)

    @property
    def stereo(self) -> bool:
        return int(getattr(self.decoder_config, "audio_channels", 1)) == 2

    @property
    def pad_token_id(self) -> int:
        return int(self.decoder_config.pad_token_id)

    @property
    def start_token_id(self) -> int:
        gen = getattr(self.model, "generation_config", None)
        start = getattr(gen, "decoder_start_token_id", None)
        return int(start if start is not None else self.pad_token_id)

    @property
    def frame_rate_hz(self) -> float:
        return float(self.model.config.audio_encoder.frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def channels(self) -> int:
        return 2 if self.stereo else 1

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def load_musicgen(spec: ModelSpec, snapshot: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load from a local snapshot folder only: no network at load time."""
    import time

    from transformers import (
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    started = time.perf_counter()
    cls = MusicgenMelodyForConditionalGeneration if spec.kind == "musicgen-melody" else MusicgenForConditionalGeneration
    model = cls.from_pretrained(snapshot, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        source=snapshot,
        load_time_s=time.perf_counter() - started,
    )
