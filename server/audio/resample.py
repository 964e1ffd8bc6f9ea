"""Sample-rate conversion with soxr, with exact output lengths."""

from __future__ import annotations

import numpy as np
import soxr


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample (channels, samples) from ``from_rate`` to ``to_rate`` Hz.

    The result has exactly round(samples * to_rate / from_rate) samples per channel: soxr can be
    one sample off, and callers (durations in headers, mixing) rely on the arithmetic length.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must have shape (channels, samples), got {audio.shape}")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    audio = audio.astype(np.float32, copy=False)
    if from_rate == to_rate:
        return audio
    n_out = round(audio.shape[1] * to_rate / from_rate)
    if audio.shape[1] == 0:
        return np.zeros((audio.shape[0], 0), dtype=np.float32)
    # soxr wants (frames, channels) in C order; "HQ" is its high-quality preset (its default).
    frames = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate, quality="HQ")
    return fit_length(np.ascontiguousarray(frames.T), n_out)


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad (at the end) to exactly ``n_samples`` samples per channel."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    current = audio.shape[1]
    if current >= n_samples:
        return audio[:, :n_samples]
    return np.pad(audio, ((0, 0), (0, n_samples - current)))
