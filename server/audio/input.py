"""Input audio of a generation (a melody, an audio prompt): any file we can read, as float32 at the
model's rate and channel count."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from server.audio.decode import read_audio, to_channels
from server.audio.errors import AudioInputError
from server.audio.resample import resample


def load_input(
    data: bytes | BinaryIO,
    sample_rate: int,
    channels: int,
    max_duration_s: float,
    filename: str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    field: str = "audio",
) -> np.ndarray:
    """Decode (WAV, MP3, FLAC, OGG, M4A, ...), cut to [start_s, end_s), mix to `channels` and
    resample (soxr) to `sample_rate`: float32 [channels, samples]. Anything unusable raises
    AudioInputError naming `field`, with what to do about it."""
    try:
        audio, rate = read_audio(data, filename, max_duration_s=max_duration_s)
    except AudioInputError as exc:
        raise AudioInputError(exc.message, field=field) from None
    n = audio.shape[1]
    length_s = n / rate
    # Compared in seconds first: a trim past the end (1e308 s) never becomes a sample index.
    first = 0 if not start_s else n if start_s >= length_s else round(start_s * rate)
    last = n if end_s is None or end_s >= length_s else round(end_s * rate)
    if first >= n:
        raise AudioInputError(
            f"{field}_start is {start_s:g} s but the {field} is only {length_s:.2f} s long; "
            f"give a {field}_start under {length_s:.2f}",
            field=f"{field}_start",
        )
    if last <= first:
        raise AudioInputError(f"nothing is left of the {field} between its start and end", field=f"{field}_end")
    audio = to_channels(audio[:, first:last], channels)
    return resample(audio, rate, sample_rate)
