"""A model in memory: the transformers modules plus what the decode loop needs to know."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lib.catalogue import ModelSpec
from server.models.device import precision_of


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
    # The decoder step the engine runs (server/engine/fastlm.py), built at load or on first use.
    fast: Any = field(default=None, repr=False)
    _fast_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def precision(self) -> str:
        """float32, bfloat16, float16 or int8 (weight-only): the decoder's precision."""
        return precision_of(self.dtype)

    def fast_lm(self):
        """The packed decoder for this model's precision (built once, then shared)."""
        if self.fast is None:
            with self._fast_lock:
                if self.fast is None:
                    from server.engine.fastlm import FastLM

                    self.fast = FastLM(self.model.decoder, self.precision, self.device)
        return self.fast

    @property
    def decoder_config(self):
        return self.model.config.decoder

    @property
    def num_codebooks(self) -> int:
        return int(self.decoder_config.num_codebooks)

    @property
    def melody(self) -> bool:
        """A melody model: its conditioning (chroma, then text) is prepended to the decoder input
        instead of being cross-attended."""
        return getattr(self.model.config, "chroma_length", None) is not None

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
        seen: set[int] = set()
        total = 0
        tensors = [p for p in self.model.parameters()]
        if self.fast is not None:
            tensors += self.fast.tensors()
        for t in tensors:
            if t.is_meta or t.untyped_storage().data_ptr() in seen:
                continue
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
        if self.fast is not None:
            total += self.fast.packed_bytes()
        return total


def prepare(model, spec: ModelSpec, tokenizer, device: torch.device, dtype: torch.dtype, source: Path) -> LoadedModel:
    """Put a float32 MusicGen model on the device at the given decoder precision.

    The text encoder, the projection and EnCodec stay float32. The decoder is packed for the engine's
    step (FastLM). At float32 the packed decoder shares the transformers weights, and the transformers
    decoder stays usable (the reference the tests compare against). At any other precision the
    transformers decoder's fp32 weights are released (moved to the meta device): the packed copy is
    the only one kept, so memory holds one decoder, not two.
    """
    from server.engine.fastlm import FastLM

    model.eval()
    _bake_weight_norm(model.audio_encoder)
    precision = precision_of(dtype)
    lm = LoadedModel(spec=spec, model=model, tokenizer=tokenizer, device=device, dtype=dtype, source=source)
    if precision == "float32":
        model.to(device)
        lm.fast = FastLM(model.decoder, precision, device)
        return_freed_memory()  # the separate q/k/v weights, now views of the fused one
        return lm
    lm.fast = FastLM(model.decoder, precision, device, release=True)
    model.decoder.to("meta")
    for name, child in model.named_children():
        if name != "decoder":
            child.to(device)
    return_freed_memory()
    return lm


def _bake_weight_norm(module: torch.nn.Module) -> None:
    """EnCodec's convolutions recompute weight = g * v / |v| on every call; compute it once.
    The weights are the same values, so the audio is bit-identical."""
    from torch.nn.utils import parametrize

    for child in module.modules():
        if parametrize.is_parametrized(child):
            for name in list(child.parametrizations.keys()):
                parametrize.remove_parametrizations(child, name, leave_parametrized=True)


def return_freed_memory() -> None:
    """Hand the released fp32 decoder back to the OS: glibc keeps large freed blocks in its heap
    (its mmap threshold grows as big blocks are freed), so RSS would not drop on its own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
BIG_BLOCK_BYTES = 16 * 2**20


def map_big_blocks() -> None:
    """Give every allocation of 16 MB or more its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time a big block is freed, so the weights released while a
    model is packed (one fp32 layer after another) stay in its heap and count in RSS until the end:
    musicgen-large peaked at 22.5 GB loading at int8, 17.4 GB with this (docs/benchmarks.md). A fixed
    threshold stops that. Decode steps allocate far below 16 MB, so they never pay for a mapping.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK_BYTES)
    except (OSError, AttributeError):  # not glibc
        pass


def load_musicgen(spec: ModelSpec, snapshot: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load from a local snapshot folder only: no network at load time. dtype is the decoder's
    precision (torch.int8: int8 weight-only); see server/models/device.py."""
    return load_folder(spec, snapshot, snapshot, device, dtype)


def load_audiogen(spec: ModelSpec, snapshot: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """An audiocraft export (AudioGen): converted into the MusicGen classes on first load, then the
    converted copy beside it in the hub cache is what loads (server/models/convert/)."""
    from server.hub import store
    from server.models.convert.cache import ensure_converted

    hub_cache = snapshot.parent.parent.parent  # <hub>/models--org--name/snapshots/<rev>
    t5_snapshots = [store.transformers_snapshot(repo, hub_cache) for repo in spec.extra_repos]
    if not t5_snapshots or t5_snapshots[0] is None:
        raise store.ModelNotInstalled(spec, hub_cache)
    return load_folder(spec, ensure_converted(snapshot, t5_snapshots[0]), snapshot, device, dtype, audiocraft=True)


def audiocraft_positions(num_positions: int, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal table as audiocraft computes it (cos then sin, phase = t / max_period^(i / (half - 1))).
    transformers writes the same formula through exp/log, which differs in the last bits; models
    trained in audiocraft get audiocraft's numbers."""
    half = dim // 2
    positions = torch.arange(num_positions, dtype=torch.float32).view(-1, 1)
    adim = torch.arange(half, dtype=torch.float32).view(1, -1)
    phase = positions / (torch.full([], max_period, dtype=torch.float32) ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def load_folder(
    spec: ModelSpec, folder: Path, source: Path, device: torch.device, dtype: torch.dtype, audiocraft: bool = False
) -> LoadedModel:
    """A MusicGen-class folder as a LoadedModel for `spec`. audiocraft: the folder was converted from
    audiocraft's export format (its positional table is then audiocraft's)."""
    import time

    from transformers import (
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    started = time.perf_counter()
    cls = MusicgenMelodyForConditionalGeneration if spec.kind == "musicgen-melody" else MusicgenForConditionalGeneration
    model = cls.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    if audiocraft:
        embed = model.decoder.model.decoder.embed_positions
        embed.weights = audiocraft_positions(embed.weights.shape[0], embed.weights.shape[1])
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    lm = prepare(model, spec, tokenizer, device, dtype, source)
    lm.load_time_s = time.perf_counter() - started
    return lm
