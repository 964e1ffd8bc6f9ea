"""From model output to the bytes a client receives: resample, normalise, encode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.schemas import OutputOptions
from server.audio.encode import FILE_EXTENSIONS, encode_audio
from server.audio.loudness import normalize
from server.audio.resample import resample


@dataclass(frozen=True)
class RenderedAudio:
    data: bytes
    media_type: str
    sample_rate: int
    channels: int
    duration_s: float
    extension: str


def render(audio: np.ndarray, native_rate: int, options: OutputOptions) -> RenderedAudio:
    """Turn (channels, samples) audio at ``native_rate`` into a file as ``options`` asks.

    Normalisation comes after resampling so the peak cap holds for the samples actually written
    (resampling can raise inter-sample peaks into sample peaks).
    """
    sample_rate = native_rate if options.sample_rate == "native" else int(options.sample_rate)
    audio = resample(audio, native_rate, sample_rate)
    audio = normalize(audio, sample_rate, options.normalize)
    data, media_type = encode_audio(audio, sample_rate, options.format, options.bit_depth)
    return RenderedAudio(
        data=data,
        media_type=media_type,
        sample_rate=sample_rate,
        channels=int(audio.shape[0]),
        duration_s=audio.shape[1] / sample_rate,
        extension=FILE_EXTENSIONS[options.format],
    )
