"""Text to audio on a MusicGen-family model: prompts in, waveforms out. Knows nothing of HTTP or jobs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.engine.decode import CancelCheck, DecodeRequest, StepCallback, codes_to_audio, generate_codes
from server.engine.errors import UnsupportedRequest
from server.engine.loaded import LoadedModel


@dataclass(frozen=True)
class TextToAudio:
    prompt: str
    duration_s: float
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0


@dataclass
class Waveform:
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    seed: int

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / self.sample_rate


def check_duration(lm_window_s: float | None, duration_s: float, model: str) -> None:
    if lm_window_s is not None and duration_s > lm_window_s:
        raise UnsupportedRequest(
            f"{model} generates at most {lm_window_s:g} s per request in this build",
            hint=f"ask for {lm_window_s:g} s or less; longer audio arrives with sliding-window generation",
            field="duration",
        )


def decode_request(lm: LoadedModel, item: TextToAudio) -> DecodeRequest:
    check_duration(lm.spec.window_s, item.duration_s, lm.spec.name)
    return DecodeRequest(
        prompt=item.prompt,
        n_frames=max(1, math.ceil(item.duration_s * lm.frame_rate_hz)),
        seed=item.seed,
        temperature=item.temperature,
        top_k=item.top_k,
        top_p=item.top_p,
        cfg_coef=item.cfg_coef,
    )


def waveform(lm: LoadedModel, item: TextToAudio, codes) -> Waveform:
    """Decode a request's codes and trim to exactly the asked duration (frames are 20 ms)."""
    audio = codes_to_audio(lm, codes).numpy()
    n_samples = round(item.duration_s * lm.sample_rate)
    return Waveform(np.ascontiguousarray(audio[:, :n_samples]), lm.sample_rate, item.seed)


def generate(
    lm: LoadedModel,
    items: Sequence[TextToAudio],
    on_step: StepCallback | None = None,
    is_cancelled: CancelCheck | None = None,
) -> list[Waveform | None]:
    """One decode batch for all items; each keeps its own seed, sampling and duration."""
    requests = [decode_request(lm, item) for item in items]
    codes = generate_codes(lm, requests, on_step=on_step, is_cancelled=is_cancelled)
    return [None if c is None else waveform(lm, item, c) for item, c in zip(items, codes, strict=True)]
