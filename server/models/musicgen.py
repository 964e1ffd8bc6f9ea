"""MusicGen and MusicGen-Melody: a transformers MusicGen-class folder loaded as a TextToAudioLM."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models import packcache
from server.models.heap import map_load_blocks, return_freed_memory
from server.models.loaded import TextToAudioLM
from server.models.streamed import Reads
from server.models.weights import bake_weight_norm, pack_decoder


def load_musicgen(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> TextToAudioLM:
    """Load from a local snapshot folder only: no network at load time. `precision` is the decoder's
    (server/models/device.py)."""
    return load_folder(spec, snapshot, snapshot, device, precision)


def load_folder(
    spec: ModelSpec, folder: Path, source: Path, device: torch.device, precision: str, audiocraft: bool = False
) -> TextToAudioLM:
    """A MusicGen-class folder as a TextToAudioLM for `spec`. audiocraft: the folder was converted from
    audiocraft's export format (its positional table is then audiocraft's)."""
    from transformers import (
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    started = time.perf_counter()
    # MusicGen-Style prepends its style tokens and the text as a melody model does its chroma and text.
    prefixed = spec.kind in ("musicgen-melody", "musicgen-style")
    cls = MusicgenMelodyForConditionalGeneration if prefixed else MusicgenForConditionalGeneration

    def build():
        model = cls.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        if audiocraft:
            embed = model.decoder.model.decoder.embed_positions
            embed.weights = audiocraft_positions(embed.weights.shape[0], embed.weights.shape[1])
        bake_weight_norm(model.audio_encoder)
        return model

    form = packcache.form_of(precision)
    with map_load_blocks():
        if form is None:  # float32: the checkpoint is what the engine runs on
            model, reads = build(), Reads()
        else:  # the decoder in the form the engine packs from: from the cache beside the snapshot,
            # its tensors still being read as the decoder is packed (packcache's docstring)
            model, reads = packcache.load(folder, form, lambda: skeleton(cls, folder), build)
        with reads:  # a failure below stops the reading thread before the error goes on
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            lm = prepare(model, spec, tokenizer, device, precision, source, ready=reads.wait)
            reads.finish()  # the whole model is in before it is handed out
    lm.load_time_s = time.perf_counter() - started
    return lm


def skeleton(cls, folder: Path):
    """The model's structure from its config, on the meta device (no weights), weight norm removed as
    `bake_weight_norm` leaves it: what the packed-decoder cache fills (server/models/packcache.py)."""
    from transformers import GenerationConfig

    config = cls.config_class.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = cls(config)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    bake_weight_norm(model.audio_encoder)
    return model


def prepare(
    model,
    spec: ModelSpec,
    tokenizer,
    device: torch.device,
    precision: str,
    source: Path,
    ready: Callable[[torch.nn.Module], None] | None = None,
) -> TextToAudioLM:
    """A float32 MusicGen-class model, on the device with its decoder packed at `precision`
    (server/models/weights.py), as a TextToAudioLM. ready(module): returns once the module's weights
    are in (a load still reading them); None: they all are."""
    model.eval()
    bake_weight_norm(model.audio_encoder)
    fast = pack_decoder(model, precision, device, ready=ready)
    return_freed_memory()  # the released fp32 decoder, or (float32) the q/k/v weights now views of the fused one
    return TextToAudioLM(
        spec=spec, model=model, tokenizer=tokenizer, device=device, precision=precision, source=source, fast=fast
    )


def audiocraft_positions(num_positions: int, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal table as audiocraft computes it (cos then sin, phase = t / max_period^(i / (half - 1))).
    transformers writes the same formula through exp/log, which differs in the last bits; models
    trained in audiocraft get audiocraft's numbers."""
    half = dim // 2
    positions = torch.arange(num_positions, dtype=torch.float32).view(-1, 1)
    adim = torch.arange(half, dtype=torch.float32).view(1, -1)
    phase = positions / (torch.full([], max_period, dtype=torch.float32) ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
