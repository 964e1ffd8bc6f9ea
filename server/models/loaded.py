"""Models in memory: what the registry needs of any of them, and one type per kind.

`ResidentModel` is all the registry, /health and /api/models read of a loaded model. Each kind has
its own type beside it:

- `TextToAudioLM`: MusicGen, MusicGen-Melody and AudioGen (all in the transformers MusicGen classes):
  a text encoder, the decoder the engine steps (packed, server/engine/fastlm.py), and EnCodec.
- `CodecModel`: EnCodec alone, for the codec routes (server/engine/codec/).
- `WatermarkModel`: AudioSeal's generator and detector (server/engine/watermark.py).

What HTTP shows of a model is a plain string here (`device_type`, `precision`), so describing one
needs no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lib.catalogue import ModelSpec

if TYPE_CHECKING:
    import torch

    from server.engine.fastlm import FastLM


class ResidentModel(Protocol):
    """A loaded model as the registry sees it."""

    spec: ModelSpec
    device: torch.device
    precision: str  # a name from server/models/device.py PRECISIONS: "float32", "int8-dynamic", ...
    source: Path  # the snapshot it was loaded from
    load_time_s: float
    last_used: float  # time.time() of its last use

    @property
    def device_type(self) -> str:
        """The device kind: "cpu" or "cuda"."""
        ...

    def memory_bytes(self) -> int:
        """What the model holds in memory (its weights, once each)."""
        ...


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once; meta tensors
    hold nothing)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t.is_meta or t.untyped_storage().data_ptr() in seen:
            continue
        seen.add(t.untyped_storage().data_ptr())
        total += t.untyped_storage().nbytes()
    return total


@dataclass(kw_only=True)
class _Described:
    """The fields every kind shares (those of ResidentModel), and the strings HTTP reads."""

    spec: ModelSpec
    device: torch.device
    precision: str
    source: Path
    load_time_s: float = 0.0
    last_used: float = 0.0

    @property
    def device_type(self) -> str:
        return self.device.type


# For a loaded type defined beside its loader (server/models/mbd.py).
Described = _Described


@dataclass(kw_only=True)
class TextToAudioLM(_Described):
    """A MusicGen-class model (MusicGen, MusicGen-Melody, AudioGen) ready for the decode loop."""

    model: Any  # MusicgenForConditionalGeneration / MusicgenMelodyForConditionalGeneration
    tokenizer: Any
    # The decoder step the engine runs (server/engine/fastlm.py), packed at load (or on first use).
    fast: FastLM | None = field(default=None, repr=False)
    _fast_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fast_lm(self) -> FastLM:
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
    def styled(self) -> bool:
        """A MusicGen-Style model (server/models/style.py StyleLM): its prefix is a style condition."""
        return False

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
        tensors = list(self.model.parameters())
        if self.fast is None:
            return storage_bytes(tensors)
        return storage_bytes(tensors + self.fast.tensors()) + self.fast.packed_bytes()


@dataclass(kw_only=True)
class CodecModel(_Described):
    """An EnCodec model (transformers EncodecModel, eval mode), always float32: codes are argmins over
    distances, which half precision would change."""

    model: Any
    precision: str = "float32"

    def memory_bytes(self) -> int:
        return storage_bytes(self.model.parameters())


@dataclass(kw_only=True)
class WatermarkModel(_Described):
    """AudioSeal's generator and detector (server/engine/watermark.py), float32 whatever the settings'
    precision: the watermark is a small signal under the audio, and the model is small."""

    generator: Any
    detector: Any
    precision: str = "float32"

    def memory_bytes(self) -> int:
        return storage_bytes([*self.generator.parameters(), *self.detector.parameters()])
