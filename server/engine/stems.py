"""Stems for melody conditioning, as AudioCraft's ChromaStemConditioner takes them.

The melody (mono, at the language model's rate) goes to the separator's rate and channels
(demucs.audio.convert_audio: mono copied to both channels, then julius' sinc resampler), through
htdemucs as demucs' `apply_model` runs it by default (one random time shift of up to 0.5 s, 7.8 s
segments overlapping by a quarter, blended with triangular weights), then the vocals and "other"
stems are summed, so drums and bass do not pull the chroma, and brought back to the model's rate
in mono. The chroma of that (server/engine/chroma.py) is the melody's conditioning.

The one difference from AudioCraft is where the shift comes from: `apply_model` draws it from
Python's global `random`; here it is drawn from a generator seeded by the job's seed, so the same
request gives the same stems (and `random.seed(s)` before AudioCraft's call gives the same shift).
"""

from __future__ import annotations

import random

import numpy as np
import torch

# The stems ChromaStemConditioner keeps, by name (their indices come from the model's sources).
MELODY_STEMS = ("vocals", "other")
MAX_SHIFT_S = 0.5  # apply_model's shift range
OVERLAP = 0.25  # apply_model's default overlap of segments


def separate(bag, wav: torch.Tensor, seed: int) -> torch.Tensor:
    """Stems [batch, sources, channels, samples] of `wav` [batch, channels, samples] at the bag's rate:
    demucs.apply.apply_model(bag, wav) with shifts=1, split=True, overlap=0.25, the shift drawn
    from `seed` (one per model of the bag, in order, as apply_model draws them)."""
    from demucs.apply import TensorChunk, apply_model

    rng = random.Random(seed)
    length = wav.shape[-1]
    estimates = torch.zeros(wav.shape[0], len(bag.sources), wav.shape[1], length, device=wav.device)
    totals = [0.0] * len(bag.sources)
    for model, weights in zip(bag.models, bag.weights, strict=True):
        max_shift = int(MAX_SHIFT_S * model.samplerate)
        padded = TensorChunk(wav).padded(length + 2 * max_shift)
        offset = rng.randint(0, max_shift)
        shifted = TensorChunk(padded, offset, length + max_shift - offset)
        with torch.no_grad():
            out = apply_model(model, shifted, shifts=0, split=True, overlap=OVERLAP, device=wav.device)
        out = out[..., max_shift - offset :]
        for k, weight in enumerate(weights):
            out[:, k] *= weight
            totals[k] += weight
        estimates += out
    for k, total in enumerate(totals):
        estimates[:, k] /= total
    return estimates


def stem_indices(sources: list[str]) -> list[int]:
    missing = [s for s in MELODY_STEMS if s not in sources]
    if missing:
        raise ValueError(f"the separator has no {missing[0]!r} stem (its sources: {', '.join(sources)})")
    return [sources.index(s) for s in MELODY_STEMS]


def melody_stems(bag, melody: np.ndarray | torch.Tensor, sample_rate: int, seed: int) -> torch.Tensor:
    """The melody's vocals + other, mono [samples'] at `sample_rate` (float32): ChromaStemConditioner's
    _get_stemmed_wav for one melody [samples] at `sample_rate`."""
    from demucs.audio import convert_audio

    wav = torch.as_tensor(np.asarray(melody, dtype=np.float32) if not isinstance(melody, torch.Tensor) else melody)
    wav = wav.float().reshape(1, 1, -1)
    device = next(iter(bag.parameters())).device
    with torch.no_grad():
        wav = convert_audio(wav.to(device), sample_rate, bag.samplerate, bag.audio_channels)
        stems = separate(bag, wav, seed)
        mix = stems[:, stem_indices(list(bag.sources))].sum(1)
        mix = convert_audio(mix, bag.samplerate, sample_rate, 1)
    return mix[0, 0].cpu()
