"""AudioSeal's watermark on current torch: the generator that embeds it and the detector that finds it.

Both are built on SEANet, the EnCodec encoder and decoder, so they are transformers' EncodecEncoder
and EncodecDecoder with AudioSeal's config (server/models/convert/audioseal.py reads it), weight norm
folded into plain weights at build time:

- generator: `h = encoder(x)`; each bit i of the message adds its learnt vector `E[2i + bit]` to every
  frame of h; `watermark = decoder(h)[..., :T]`; the marked audio is `x + alpha * watermark`.
- detector: `encoder(x)`, back to one vector per sample by a transposed convolution of the encoder's
  hop (trimmed to T), then a 1x1 convolution to 2 + nbits channels: a softmax over the first two
  gives each sample's probability of carrying the mark (channel 1), the sigmoid of the time mean of
  the others the message's bits.

AudioSeal works at 16 kHz. Audio at another rate is resampled (soxr) to 16 kHz, the watermark made
there and resampled back, then added to the audio at its own rate, as AudioCraft does, so the band
above 8 kHz passes untouched. Long audio goes through in pieces of PIECE_S seconds, each marked (or
read) on its own, which bounds the memory of the convolutions' activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from server.audio.resample import fit_length, resample

SAMPLE_RATE = 16000
PIECE_S = 30.0
DETECTION_THRESHOLD = 0.5  # a sample carries the mark when its probability is above this (AudioSeal's default)
MESSAGE_THRESHOLD = 0.5  # a bit is 1 when its probability is above this


@dataclass(frozen=True)
class WatermarkConfig:
    """The shape of an AudioSeal pair: the SEANet's EncodecConfig arguments, the message's bits and
    the width of the detector's per-sample features."""

    seanet: dict[str, Any]
    nbits: int
    output_dim: int

    def to_json(self) -> dict[str, Any]:
        return {"seanet": self.seanet, "nbits": self.nbits, "output_dim": self.output_dim}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatermarkConfig:
        return cls(seanet=dict(data["seanet"]), nbits=int(data["nbits"]), output_dim=int(data["output_dim"]))

    def encodec_config(self):
        from transformers import EncodecConfig

        return EncodecConfig(**self.seanet)

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.seanet["upsampling_ratios"]))


def fold_weight_norm(module: nn.Module) -> None:
    """Replace every weight-norm parametrization under `module` by the weight it computes."""
    from torch.nn.utils import parametrize

    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)


class Generator(nn.Module):
    """AudioSeal's watermark generator."""

    def __init__(self, config: WatermarkConfig):
        from transformers.models.encodec.modeling_encodec import EncodecDecoder, EncodecEncoder

        super().__init__()
        encodec = config.encodec_config()
        self.nbits = config.nbits
        self.encoder = EncodecEncoder(encodec)
        self.decoder = EncodecDecoder(encodec)
        # One vector per (bit, value): row 2i + b is bit i set to b.
        self.message = nn.Embedding(2 * config.nbits, encodec.hidden_size) if config.nbits else None
        fold_weight_norm(self)

    def forward(self, audio: torch.Tensor, bits: torch.Tensor | None = None) -> torch.Tensor:
        """The watermark (not the marked audio) for `audio` [batch, 1, samples]; `bits` [batch, nbits]
        of 0/1 (ignored by a 0-bit model)."""
        length = audio.shape[-1]
        hidden = self.encoder(audio)
        if self.message is not None:
            if bits is None or bits.shape[-1] != self.nbits:
                raise ValueError(f"this generator embeds a {self.nbits}-bit message")
            rows = 2 * torch.arange(self.nbits, device=audio.device) + bits.to(device=audio.device, dtype=torch.long)
            hidden = hidden + self.message(rows).sum(dim=-2).unsqueeze(-1)
        return self.decoder(hidden)[..., :length]


class Detector(nn.Module):
    """AudioSeal's watermark detector."""

    def __init__(self, config: WatermarkConfig):
        from transformers.models.encodec.modeling_encodec import EncodecEncoder

        super().__init__()
        encodec = config.encodec_config()
        self.nbits = config.nbits
        self.encoder = EncodecEncoder(encodec)
        hop = config.hop_length
        self.upsample = nn.ConvTranspose1d(encodec.hidden_size, config.output_dim, kernel_size=hop, stride=hop)
        self.head = nn.Conv1d(config.output_dim, 2 + config.nbits, 1)
        fold_weight_norm(self)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(each sample's probability of carrying the mark [batch, samples], the raw message logits
        summed over time [batch, nbits]) for `audio` [batch, 1, samples]."""
        length = audio.shape[-1]
        features = self.upsample(self.encoder(audio))[..., :length]
        out = self.head(features)
        marked = torch.softmax(out[:, :2, :], dim=1)[:, 1, :]
        return marked, out[:, 2:, :].sum(dim=-1)


def message_bits(message: int, nbits: int) -> list[int]:
    """The bits of `message`, most significant first (bit 0 of the model is the message's top bit)."""
    if not 0 <= message < 2**nbits:
        raise ValueError(f"a {nbits}-bit message is between 0 and {2**nbits - 1}, not {message}")
    return [(message >> (nbits - 1 - i)) & 1 for i in range(nbits)]


def bits_value(bits: Sequence[int]) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _pieces(n_samples: int) -> list[tuple[int, int]]:
    step = int(PIECE_S * SAMPLE_RATE)
    return [(start, min(n_samples, start + step)) for start in range(0, n_samples, step)]


def embed(generator: Generator, audio: np.ndarray, sample_rate: int, message: int, alpha: float = 1.0) -> np.ndarray:
    """`audio` (float32 [channels, samples] at `sample_rate`) with the watermark carrying `message`
    added to each channel."""
    if audio.shape[-1] == 0:
        return audio
    at_16k = resample(audio, sample_rate, SAMPLE_RATE)
    device = next(generator.parameters()).device
    bits = torch.tensor([message_bits(message, generator.nbits)] * audio.shape[0], dtype=torch.long)
    mark = np.zeros_like(at_16k)
    with torch.inference_mode():
        for start, end in _pieces(at_16k.shape[-1]):
            piece = torch.from_numpy(np.ascontiguousarray(at_16k[:, start:end])).to(device)[:, None, :]
            mark[:, start:end] = generator(piece, bits).squeeze(1).float().cpu().numpy()
    mark = fit_length(resample(mark, SAMPLE_RATE, sample_rate), audio.shape[-1])
    return (audio + alpha * mark).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Detection:
    """What the detector finds in one channel."""

    score: float  # the share of samples that carry the mark (AudioSeal's detection probability)
    bit_probabilities: tuple[float, ...]  # each bit's probability of being 1

    @property
    def detected(self) -> bool:
        return self.score > DETECTION_THRESHOLD

    @property
    def bits(self) -> list[int]:
        return [int(p > MESSAGE_THRESHOLD) for p in self.bit_probabilities]

    @property
    def message(self) -> int:
        return bits_value(self.bits)


def detect(detector: Detector, audio: np.ndarray, sample_rate: int) -> list[Detection]:
    """What the detector finds in each channel of `audio` (float32 [channels, samples])."""
    at_16k = resample(audio, sample_rate, SAMPLE_RATE)
    channels, n = at_16k.shape
    if n == 0:
        raise ValueError("the audio is empty")
    device = next(detector.parameters()).device
    marked = torch.zeros(channels, dtype=torch.float64)
    logits = torch.zeros(channels, detector.nbits, dtype=torch.float64)
    with torch.inference_mode():
        for start, end in _pieces(n):
            piece = torch.from_numpy(np.ascontiguousarray(at_16k[:, start:end])).to(device)[:, None, :]
            prob, summed = detector(piece)
            marked += (prob > DETECTION_THRESHOLD).sum(dim=-1).double().cpu()
            logits += summed.double().cpu()
    scores = (marked / n).tolist()
    bit_probs = torch.sigmoid(logits / n).tolist()
    return [Detection(score=s, bit_probabilities=tuple(p)) for s, p in zip(scores, bit_probs, strict=True)]
