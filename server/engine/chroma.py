"""Melody conditioning for MusicGen-Melody: the chroma of a waveform, as AudioCraft computes it.

Mono audio at 32 kHz -> power spectrogram (STFT, n_fft = window = 2^14, hop 2^12, Hann window,
centred with reflection, scaled by the window's energy) -> 12 pitch-class bins through a chroma
filter bank -> each frame normalised by its maximum -> one-hot on its loudest bin. 30 s give 235
frames. This is the computation of AudioCraft's ChromaExtractor and of transformers'
MusicgenMelodyFeatureExtractor, written with torch.stft because torchaudio does not load with this
project's torch.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 32000
N_FFT = 2**14
HOP_LENGTH = 2**12
NUM_CHROMA = 12
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@functools.lru_cache(maxsize=4)
def chroma_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, num_chroma: int = NUM_CHROMA) -> np.ndarray:
    """[num_chroma, n_fft // 2 + 1] weights from FFT bins to pitch classes, bin 0 = C.

    Each FFT bin spreads over the pitch classes as a Gaussian around its own (fractional) pitch
    class, as wide as the bin's distance to its neighbour in pitch; each bin's weights have unit L2
    norm; bins are weighted by a Gaussian over octaves centred on octave 5 (C5 ~ 523 Hz) with a
    half-width of 2 octaves, so very low and very high frequencies count less. No tuning offset.
    """
    bins = np.arange(1, n_fft) * (sample_rate / n_fft)  # FFT bin frequencies without DC
    # Pitch in chroma-bin units from A0 (440 / 16 Hz): 12 per octave.
    pitch = num_chroma * np.log2(bins / (440.0 / 16))
    # DC gets a made-up pitch 1.5 octaves under the first bin: a broad bump, rotated half way round.
    pitch = np.concatenate(([pitch[0] - 1.5 * num_chroma], pitch))
    width = np.concatenate((np.maximum(np.diff(pitch), 1.0), [1.0]))

    half = round(num_chroma / 2)
    # Distance from each pitch class to each bin's pitch, wrapped into [-half, half).
    distance = pitch[None, :] - np.arange(num_chroma, dtype=np.float64)[:, None]
    distance = np.remainder(distance + half + 10 * num_chroma, num_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / width[None, :]) ** 2)
    weights /= np.sqrt(np.sum(weights**2, axis=0, keepdims=True))
    octave_weight = np.exp(-0.5 * ((pitch / num_chroma - 5.0) / 2.0) ** 2)
    weights *= octave_weight[None, :]
    # The classes above start at A; C comes 3 classes later.
    weights = np.roll(weights, -3 * (num_chroma // 12), axis=0)
    return np.ascontiguousarray(weights[:, : n_fft // 2 + 1])


def chroma(
    audio: np.ndarray | torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    num_chroma: int = NUM_CHROMA,
) -> torch.Tensor:
    """One-hot chroma [frames, num_chroma] (float32) of mono audio [samples] at `sample_rate`.

    frames = 1 + samples // hop_length; audio shorter than n_fft is zero-padded on both sides first.
    """
    wav = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio)
    wav = wav.float().reshape(-1)
    if wav.numel() == 0:
        raise ValueError("no audio to take a chroma of")
    if wav.numel() < n_fft:
        pad = n_fft - wav.numel()
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft)
    spec = torch.stft(
        wav, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
        pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
    )  # fmt: skip
    spec = spec / window.pow(2).sum().sqrt()
    power = spec.abs().pow(2)  # [bins, frames]
    filters = torch.from_numpy(chroma_filters(sample_rate, n_fft, num_chroma)).float()
    raw = filters @ power  # [num_chroma, frames]
    peak = raw.amax(dim=0, keepdim=True).clamp(min=1e-6)
    loudest = (raw / peak).argmax(dim=0)
    return torch.nn.functional.one_hot(loudest, num_chroma).float()


def window_samples(melody: np.ndarray, start_sample: int, n_samples: int) -> np.ndarray:
    """`n_samples` of a mono melody from `start_sample` on, wrapping around its end (AudioCraft
    extends a melody shorter than the output periodically)."""
    positions = (start_sample + np.arange(n_samples)) % melody.shape[-1]
    return melody[..., positions]
