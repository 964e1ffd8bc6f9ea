"""MusicGen's delay pattern: codebook k is shifted right by its delay, so one LM step emits
codebook 0 of frame t, codebook 1 of frame t-1, and so on.

Stereo models interleave left/right codebooks (L0 R0 L1 R1 ...); a pair shares one delay.
"""

from __future__ import annotations

import torch


def codebook_delays(num_codebooks: int, stereo: bool) -> torch.Tensor:
    ks = torch.arange(num_codebooks)
    return ks // 2 if stereo else ks


def num_steps(n_frames: int, delays: torch.Tensor) -> int:
    """LM steps for n_frames: the last codebook lags by max(delay) steps (1500 frames -> 1503 steps)."""
    return n_frames + int(delays.max())


def valid_positions(n_frames: torch.Tensor, delays: torch.Tensor, length: int) -> torch.Tensor:
    """Bool [B, K, length]: where a generated token is kept. Column 0 is the start token; for
    codebook k, columns delay_k + 1 .. delay_k + n_frames hold frames 0 .. n_frames - 1."""
    cols = torch.arange(length).view(1, 1, -1)
    first = (delays + 1).view(1, -1, 1)
    last = delays.view(1, -1, 1) + n_frames.view(-1, 1, 1)
    return (cols >= first) & (cols <= last)


def undelay(sequence: torch.Tensor, n_frames: int, delays: torch.Tensor) -> torch.Tensor:
    """[K, length] delayed sequence of one request -> [K, n_frames] aligned codes."""
    return torch.stack([sequence[k, d + 1 : d + 1 + n_frames] for k, d in enumerate(delays.tolist())])
