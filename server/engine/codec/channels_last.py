"""transformers' EnCodec decoder, run as 2-D convolutions in channels-last layout on the CPU.

The decoder's upsampling half works on long signals with few channels ([B, 64, 160000] for 5 s at
32 kHz). On a plain [B, C, T] tensor oneDNN reorders every convolution's input to its blocked
layout and the output back, and the last stage (a transposed conv to 64 channels and a residual
block at 32 kHz) spent 350 ms of a 0.7 s decode on that and on slow conv paths (Zen 4, 2 threads).
Laid out as [B, C, 1, T] in channels_last, oneDNN runs the convolutions on the tensor as it is:
the same stage took 187 ms, and the whole decode 1.5x less alone, 2x less a request in a batch of
ten (bench/codec_decode.py). The result equals transformers' decoder to float rounding (the
convolutions sum in another order); `test/unit/test_codec_channels_last.py` checks it on the real
structure.

Weights are read once, with weight norm applied, when the runner is built: they never change
after loading (the codec is not fine-tuned).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from server.engine.codec.stream import ConvPadding, transpose_trim


def _pad_time(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """transformers' EncodecConv1d._pad1d on [B, C, 1, T]: reflect pads a short input with zeros
    first so that it can reflect at all."""
    if not left and not right:
        return x
    if mode != "reflect":
        return F.pad(x, (left, right, 0, 0), "constant" if mode == "zero" else mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra, 0, 0))
    # Along T a channels-last tensor is whole rows of channels, so the reflected edges and the
    # signal join as one copy; F.pad's reflect on this layout took 10x longer (178 ms a call at
    # [10, 64, 1, 224000]).
    parts = [x[..., 1 : left + 1].flip(-1), x, x[..., x.shape[-1] - right - 1 : -1].flip(-1)]
    padded = torch.cat([p for p in parts if p.shape[-1]], dim=-1)
    return padded[..., : padded.shape[-1] - extra]


def _weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A (transposed) convolution's weight as [*, *, 1, kernel] in channels_last, and its bias."""
    if layer.norm_type != "weight_norm":
        raise ValueError(f"{layer.norm_type} is not supported by the channels-last decoder")
    weight = layer.conv.weight.detach()[:, :, None, :].contiguous(memory_format=torch.channels_last)
    return weight, layer.conv.bias.detach()


class _Conv:
    def __init__(self, layer: nn.Module):
        self.weight, self.bias = _weights(layer)
        self.padding = ConvPadding.of(layer)
        self.dilation = int(layer.conv.dilation[0])
        self.mode = layer.pad_mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        x = _pad_time(x, p.left, p.right + p.extra(x.shape[-1]), self.mode)
        return F.conv2d(x, self.weight, self.bias, stride=(1, p.stride), dilation=(1, self.dilation))


class _ConvTranspose:
    def __init__(self, layer: nn.Module):
        self.weight, self.bias = _weights(layer)
        self.stride = int(layer.conv.stride[0])
        self.pad_left, self.pad_right = transpose_trim(layer)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # As a matmul and an overlap-add (the kernel is twice the stride) it took 20 % longer:
        # MKL's sgemm is the slow part on AMD.
        y = F.conv_transpose2d(x, self.weight, self.bias, stride=(1, self.stride))
        return y[..., self.pad_left : y.shape[-1] - self.pad_right]


class _Lstm:
    def __init__(self, layer: nn.Module):
        self.lstm = layer.lstm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        seq = x[:, :, 0].permute(2, 0, 1)  # [T, B, C]
        y = self.lstm(seq)[0] + seq
        return y.permute(1, 2, 0)[:, :, None].contiguous(memory_format=torch.channels_last)


class _Residual:
    def __init__(self, layer: nn.Module):
        self.block = [_step(m) for m in layer.block]
        self.shortcut = _step(layer.shortcut)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for step in self.block:
            h = step(h)
        return self.shortcut(x) + h


def _step(module: nn.Module):
    name = type(module).__name__
    if name == "EncodecConv1d":
        return _Conv(module)
    if name == "EncodecConvTranspose1d":
        return _ConvTranspose(module)
    if name == "EncodecLSTM":
        return _Lstm(module)
    if name == "EncodecResnetBlock":
        return _Residual(module)
    if isinstance(module, nn.ELU | nn.Identity):
        return module
    raise ValueError(f"the channels-last decoder has no version of {name}")


class ChannelsLastDecoder:
    """decoder(embeddings [B, D, T]) -> audio [B, channels, samples], as transformers'
    EncodecDecoder(embeddings) gives it, to float rounding.

    The batch runs together up to the LSTM, which reads its weights once a frame for all rows
    (10 rows: 1.0 s against 1.6 s one by one), and then one row at a time: past the LSTM the
    activations of ten 7 s rows (~0.6 GB a tensor at 32 kHz) no longer stay in cache, and the
    element-wise steps (ELU, padding, the residual adds) ran at memory speed, 40 % slower a row."""

    def __init__(self, decoder: nn.Module):
        self.steps = [_step(m) for m in decoder.layers]
        lstm = [i for i, step in enumerate(self.steps) if isinstance(step, _Lstm)]
        self._split = lstm[-1] + 1 if lstm else 0

    @torch.inference_mode()
    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = embeddings[:, :, None].contiguous(memory_format=torch.channels_last)
        for step in self.steps[: self._split]:
            x = step(x)
        rows = []
        for row in x.split(1):
            for step in self.steps[self._split :]:
                row = step(row)
            rows.append(row[:, :, 0])
        return torch.cat(rows)


def for_codec(codec: nn.Module) -> ChannelsLastDecoder | None:
    """The runner for the codec's decoder, or None where it has a layer the runner does not know
    (MusicGen's and AudioGen's have none)."""
    try:
        return ChannelsLastDecoder(codec.decoder)
    except ValueError:
        return None
