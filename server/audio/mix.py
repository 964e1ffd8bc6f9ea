"""Mixing: tracks laid out in time and summed, with gain, fades, loops, pan and ducking (numpy; soxr
resamples each track to the mix's rate through server/audio/resample.py).

The laws, as tests check them (test/unit/test_mix_dsp.py):
- gain: amplitude times 10^(gain_db / 20);
- fades: linear ramps in amplitude, fade_in_s long from the track's start and fade_out_s long to its end
  in the mix (where the mix cuts it, for a track that runs past the mix's end);
- loops: the track repeats every (length - crossfade) samples; each repeat starts under the end of the
  one before in an equal-power crossfade (sin/cos), so the seam has no jump;
- pan: a mono track by the constant-power law, left = cos(θ), right = sin(θ) with θ = (pan + 1)·π/4
  (centre: -3.01 dB each side); a stereo track as a balance, the far side by √2·cos(θ) or √2·sin(θ)
  (at most 1: the centre leaves it as it is); a track of more channels is folded to mono first;
- ducking: music tracks go down by `db` wherever the summed effect and voice tracks are above the
  threshold (RMS over 10 ms blocks), in dB-linear ramps: down over attack_s, ending where the effect
  starts (look-ahead: the mix is made offline), and up over release_s after it ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lib.schemas import DUCKED_ROLES, KEY_ROLES
from server.audio.decode import to_mono
from server.audio.resample import resample

BLOCK_S = 0.01  # the ducking detector's block
_CHUNK = 1 << 20  # samples per step where a per-sample gain curve is built (bounded memory)


@dataclass(frozen=True)
class Track:
    """One track's audio (float32 (channels, samples), already trimmed) and how it plays."""

    audio: np.ndarray
    sample_rate: int
    offset_s: float = 0.0
    gain_db: float = 0.0
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0
    loop: bool = False
    loop_crossfade_s: float = 0.0
    pan: float = 0.0
    role: str = "music"

    @property
    def length_s(self) -> float:
        return self.audio.shape[1] / self.sample_rate

    @property
    def end_s(self) -> float:
        """Where it ends in the mix when nothing cuts it (a loop's first pass)."""
        return self.offset_s + self.length_s


@dataclass(frozen=True)
class Duck:
    db: float
    attack_s: float
    release_s: float
    threshold_db: float


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def trim(audio: np.ndarray, sample_rate: int, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """The samples of [start_s, end_s) (end_s None or past the end: to the end)."""
    n = audio.shape[1]
    first = min(n, round(start_s * sample_rate))
    last = n if end_s is None else min(n, round(end_s * sample_rate))
    return audio[:, first : max(first, last)]


def pan_gains(pan: float) -> tuple[float, float]:
    """(left, right) of a mono source: the constant-power law, left² + right² = 1."""
    theta = (pan + 1.0) * math.pi / 4.0
    return math.cos(theta), math.sin(theta)


def spread(audio: np.ndarray, channels: int, pan: float = 0.0) -> np.ndarray:
    """A track's channels as the mix's (1 or 2), placed by `pan` in a stereo mix."""
    if channels == 1:
        return audio if audio.shape[0] == 1 else to_mono(audio)
    if channels != 2:
        raise ValueError(f"a mix has 1 or 2 channels, not {channels}")
    left, right = pan_gains(pan)
    if audio.shape[0] == 2:  # a balance: the centre keeps the stereo image as it is
        gains = np.array([[min(1.0, math.sqrt(2) * left)], [min(1.0, math.sqrt(2) * right)]], dtype=np.float32)
        return audio * gains
    mono = audio if audio.shape[0] == 1 else to_mono(audio)
    return np.concatenate([mono * np.float32(left), mono * np.float32(right)], axis=0)


def loop(audio: np.ndarray, n_samples: int, crossfade: int) -> np.ndarray:
    """`audio` repeated to `n_samples`: each repeat starts `crossfade` samples before the one before ends,
    faded in by sin while that one fades out by cos (equal power). The crossfade is at most half the audio."""
    length = audio.shape[1]
    if n_samples <= length or length == 0:
        return audio[:, :n_samples]
    x = min(crossfade, length // 2)
    period = length - x
    # One period after the first: the seam (the head fading in over the tail fading out), then the body.
    theta = (np.arange(x, dtype=np.float64) + 0.5) / max(x, 1) * (math.pi / 2)
    unit = audio[:, :period].copy()
    if x:
        unit[:, :x] = audio[:, :x] * np.sin(theta).astype(np.float32) + audio[:, period:] * np.cos(theta).astype(
            np.float32
        )
    repeats = math.ceil((n_samples - period) / period)
    return np.concatenate([audio[:, :period], np.tile(unit, (1, repeats))], axis=1)[:, :n_samples]


def fade(audio: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Linear ramps, in place: 0 to 1 over the first `fade_in` samples, 1 to 0 over the last `fade_out`."""
    n = audio.shape[1]
    if fade_in > 0:
        k = min(fade_in, n)
        audio[:, :k] *= (np.arange(k, dtype=np.float32) / fade_in)[None, :]
    if fade_out > 0:
        k = min(fade_out, n)
        audio[:, n - k :] *= ((np.arange(k, 0, -1, dtype=np.float32) - 1) / fade_out)[None, :]
    return audio


def place(track: Track, sample_rate: int, channels: int, n_samples: int) -> tuple[int, np.ndarray]:
    """(first sample, samples) of the track in a mix of `n_samples` at `sample_rate`: resampled, its
    channels spread, looped or cut at the mix's end, with its gain and fades."""
    start = round(track.offset_s * sample_rate)
    room = n_samples - start
    if room <= 0:
        return start, np.zeros((channels, 0), dtype=np.float32)
    audio = spread(resample(track.audio, track.sample_rate, sample_rate), channels, track.pan)
    if track.loop:
        audio = loop(audio, room, round(track.loop_crossfade_s * sample_rate))
    else:
        audio = audio[:, :room]
    audio = audio * np.float32(db_to_gain(track.gain_db))
    return start, fade(audio, round(track.fade_in_s * sample_rate), round(track.fade_out_s * sample_rate))


def duck_curve(key_power: np.ndarray, sample_rate: int, duck: Duck) -> tuple[np.ndarray, np.ndarray]:
    """(sample positions, gains) of the music's gain under a key whose power per sample (summed over
    channels) is `key_power`: one point per 10 ms block, 1 where the key is quiet, 10^(-db/20) where it
    sounds, linear ramps in dB between; np.interp gives the gain at any sample."""
    block = max(1, round(BLOCK_S * sample_rate))
    n = key_power.shape[0]
    blocks = math.ceil(n / block)
    power = np.pad(key_power, (0, blocks * block - n)).reshape(blocks, block).mean(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        level_db = 10.0 * np.log10(power)
    active = level_db > duck.threshold_db
    index = np.arange(blocks)
    far = blocks + 10**6  # past any attack or release
    last = np.maximum.accumulate(np.where(active, index, -far))
    upcoming = np.minimum.accumulate(np.where(active, index, far)[::-1])[::-1]
    # Counted from the neighbouring block: the curve's points are block centres, and the blocks on either
    # side of a sounding one stay fully down, so that the gain is flat over every sounding sample.
    since_s = np.maximum(0, index - last - 1) * (block / sample_rate)
    until_s = np.maximum(0, upcoming - index - 1) * (block / sample_rate)
    depth = np.maximum(_ramp(until_s, duck.attack_s), _ramp(since_s, duck.release_s))
    return (index + 0.5) * block, 10.0 ** (-duck.db * depth / 20.0)


def _ramp(distance_s: np.ndarray, length_s: float) -> np.ndarray:
    """1 at distance 0, falling linearly to 0 at `length_s` (a step when the length is 0)."""
    if length_s <= 0:
        return (distance_s <= 0).astype(np.float64)
    return np.clip(1.0 - distance_s / length_s, 0.0, 1.0)


def mix(
    tracks: Iterable[Track],
    sample_rate: int,
    channels: int,
    n_samples: int,
    ducking: Duck | None = None,
) -> np.ndarray:
    """The tracks summed into float32 (channels, n_samples). `tracks` is read once, one track at a time
    (a generator keeps one in memory). Not normalised: the sum as it is, peaks over 1 included."""
    out = np.zeros((channels, n_samples), dtype=np.float32)
    music = np.zeros_like(out) if ducking is not None else None
    key_power = np.zeros(n_samples, dtype=np.float32) if ducking is not None else None
    for track in tracks:
        start, audio = place(track, sample_rate, channels, n_samples)
        end = start + audio.shape[1]
        ducked = music is not None and track.role in DUCKED_ROLES
        (music if ducked else out)[:, start:end] += audio
        if key_power is not None and track.role in KEY_ROLES:
            key_power[start:end] += np.square(audio).sum(axis=0)
    if ducking is not None:
        positions, gains = duck_curve(key_power, sample_rate, ducking)
        for first in range(0, n_samples, _CHUNK):
            last = min(n_samples, first + _CHUNK)
            gain = np.interp(np.arange(first, last), positions, gains).astype(np.float32)
            out[:, first:last] += music[:, first:last] * gain[None, :]
    return out
