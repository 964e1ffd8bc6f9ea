"""Streaming execution of transformers' EnCodec encoder and decoder, chunk by chunk, with state.

The 24 kHz and 32 kHz models encode the whole audio as one piece (no segments). To do that on a
long file in bounded memory, each layer here runs on chunks and keeps exactly the state it needs
between them:

- a convolution keeps the input samples its next output still needs (kernel - stride of them),
  pads the start of the signal once, and the end once at flush, with the layer's own padding mode
  and the same `extra padding` rule as the one-piece forward;
- a transposed convolution recomputes the contribution of its last input frame(s) with each new
  chunk, emits only the output samples no later input can touch, and trims its fixed padding at
  the very start and end;
- a residual block delays its shortcut until the block's (non-causal) convolutions catch up;
- the LSTM carries its hidden and cell state.

So the output equals the one-piece forward of the same module (the tests check it on the models'
real structure), while memory depends only on the chunk size. Layers whose output depends on the
whole input at once (time_group_norm, in the 48 kHz model) cannot stream: that model works in
1 s segments anyway, see `codec.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


class NotStreamable(ValueError):
    pass


def _empty_like(x: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    return x.new_zeros(x.shape[0], x.shape[1] if channels is None else channels, 0)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    parts = [p for p in parts if p is not None]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class ConvPadding:
    """transformers' padding rule for an EncodecConv1d: `left` and `right` samples around the input,
    plus `extra(length)` on the right so that the last window is whole."""

    kernel: int  # with dilation
    stride: int
    left: int
    right: int

    @classmethod
    def of(cls, layer: nn.Module) -> ConvPadding:
        stride = int(layer.conv.stride[0])
        kernel = (int(layer.conv.kernel_size[0]) - 1) * int(layer.conv.dilation[0]) + 1
        total = kernel - stride
        if layer.causal:
            return cls(kernel, stride, total, 0)
        return cls(kernel, stride, total - total // 2, total // 2)

    def extra(self, length: int) -> int:
        """transformers' _get_extra_padding_for_conv1d for an input of `length` samples."""
        total = self.kernel - self.stride
        n_frames = math.ceil((length - self.kernel + total) / self.stride + 1) - 1
        return n_frames * self.stride + self.kernel - total - length


def transpose_trim(layer: nn.Module) -> tuple[int, int]:
    """The samples an EncodecConvTranspose1d trims from its output's start and end."""
    stride = int(layer.conv.stride[0])
    total = int(layer.conv.kernel_size[0]) - stride
    right = math.ceil(total * layer.trim_right_ratio) if layer.causal else total // 2
    return total - right, right


class Stage:
    """One streaming step: push chunks (batch, channels, time), then flush once at the end."""

    def push(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flush(self) -> torch.Tensor | None:
        return None


class Pointwise(Stage):
    def __init__(self, module: nn.Module):
        self.module = module

    def push(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) if x.shape[-1] else x


class Conv(Stage):
    """transformers' EncodecConv1d (weight norm), run on chunks."""

    def __init__(self, layer: nn.Module):
        if getattr(layer, "norm_type", "weight_norm") != "weight_norm":
            raise NotStreamable(f"{layer.norm_type} normalises over the whole input and cannot stream")
        self.conv = layer.conv
        self.mode = layer.pad_mode
        self.padding = ConvPadding.of(layer)
        self.stride, self.kernel = self.padding.stride, self.padding.kernel
        self.pad_left, self.pad_right = self.padding.left, self.padding.right
        # Right padding is pad_right plus at most stride - 1 "extra" samples; reflecting m samples
        # needs the last m + 1 real ones.
        self._tail_len = self.pad_right + self.stride
        self._buf: torch.Tensor | None = None  # padded input not yet consumed
        self._head: torch.Tensor | None = None  # input seen before the left padding could be made
        self._tail: torch.Tensor | None = None  # the last real input samples
        self._seen = 0

    def _pad(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        if self.mode == "reflect":
            return nn.functional.pad(x, (left, right), "reflect")
        if self.mode in ("zero", "constant"):
            return nn.functional.pad(x, (left, right), "constant", 0.0)
        return nn.functional.pad(x, (left, right), self.mode)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if not x.shape[-1]:
            return _empty_like(x, self.conv.out_channels)
        self._seen += x.shape[-1]
        # Kept pieces are copied: a view would keep the whole chunk alive until the next push.
        self._tail = (x if self._tail is None else _cat([self._tail, x]))[..., -self._tail_len :].clone()
        if self._buf is None:
            self._head = x if self._head is None else _cat([self._head, x])
            if self._head.shape[-1] <= self.pad_left:  # reflecting needs pad_left + 1 samples
                return _empty_like(x, self.conv.out_channels)
            head, self._head = self._head, None
            left = self._pad(head[..., : self.pad_left + 1], self.pad_left, 0)[..., : self.pad_left]
            self._buf = _cat([left, head])
        else:
            self._buf = _cat([self._buf, x])
        return self._run(x)

    def _run(self, like: torch.Tensor) -> torch.Tensor:
        assert self._buf is not None
        length = self._buf.shape[-1]
        if length < self.kernel:
            return _empty_like(like, self.conv.out_channels)
        n = (length - self.kernel) // self.stride + 1
        y = self.conv(self._buf[..., : (n - 1) * self.stride + self.kernel])
        self._buf = self._buf[..., n * self.stride :].clone()
        return y

    def flush(self) -> torch.Tensor | None:
        if self._seen == 0:
            return None
        if self._buf is None or self._tail is None:
            raise NotStreamable("the input is too short to stream; run the module on it in one piece")
        right = self.pad_right + self.padding.extra(self._seen)  # on the whole input's length
        if right:
            if self._tail.shape[-1] <= right:
                raise NotStreamable("the input is too short to stream; run the module on it in one piece")
            self._buf = _cat([self._buf, self._pad(self._tail, 0, right)[..., -right:]])
        y = self._run(self._buf)
        self._buf = None
        return y


class ConvTranspose(Stage):
    """transformers' EncodecConvTranspose1d (weight norm), run on chunks."""

    def __init__(self, layer: nn.Module):
        if getattr(layer, "norm_type", "weight_norm") != "weight_norm":
            raise NotStreamable(f"{layer.norm_type} normalises over the whole input and cannot stream")
        self.conv = layer.conv
        self.stride = int(layer.conv.stride[0])
        self.pad_left, pad_right = transpose_trim(layer)
        # Input frames before a chunk that still add to the chunk's first output samples.
        self.context = math.ceil((self.pad_left + pad_right) / self.stride)
        self._prev: torch.Tensor | None = None
        self._frames = 0  # input frames seen
        self._emitted = 0  # untrimmed output samples emitted (or dropped as left padding)

    def _emit(self, y: torch.Tensor, y_start: int, end: int) -> torch.Tensor:
        """Untrimmed samples [max(emitted, pad_left), end) of `y`, which starts at `y_start`."""
        start = max(self._emitted, self.pad_left)
        self._emitted = max(self._emitted, end)
        if end <= start:
            return y[..., :0]
        return y[..., start - y_start : end - y_start]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if not x.shape[-1]:
            return _empty_like(x, self.conv.out_channels)
        inp = x if self._prev is None else _cat([self._prev, x])
        first = self._frames - (0 if self._prev is None else self._prev.shape[-1])
        self._frames += x.shape[-1]
        y = self.conv(inp)
        self._prev = inp[..., -self.context :].clone() if self.context else None
        # Samples before frames * stride get nothing from later frames: they are final.
        return self._emit(y, first * self.stride, self._frames * self.stride)

    def flush(self) -> torch.Tensor | None:
        if self._prev is None or self._frames == 0:
            return None
        first = self._frames - self._prev.shape[-1]
        y = self.conv(self._prev)
        # The trimmed output is untrimmed[pad_left : pad_left + frames * stride].
        out = self._emit(y, first * self.stride, self._frames * self.stride + self.pad_left)
        self._prev = None
        return out


class Lstm(Stage):
    """transformers' EncodecLSTM (skip connection included), carrying its state."""

    def __init__(self, layer: nn.Module):
        self.lstm = layer.lstm
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if not x.shape[-1]:
            return x
        seq = x.permute(2, 0, 1)
        y, self._state = self.lstm(seq, self._state)
        return (y + seq).permute(1, 2, 0)


class Residual(Stage):
    """transformers' EncodecResnetBlock: shortcut(x) + block(x), the shortcut delayed to match."""

    def __init__(self, layer: nn.Module):
        self.block = Chain([stage_for(m) for m in layer.block])
        self.shortcut = stage_for(layer.shortcut)
        self._pending: torch.Tensor | None = None

    def _combine(self, short: torch.Tensor | None, block: torch.Tensor | None) -> torch.Tensor | None:
        if short is not None and short.shape[-1]:
            self._pending = short if self._pending is None else _cat([self._pending, short])
        if block is None or not block.shape[-1]:
            return block
        assert self._pending is not None and self._pending.shape[-1] >= block.shape[-1]
        n = block.shape[-1]
        out = self._pending[..., :n] + block
        self._pending = self._pending[..., n:].clone()
        return out

    def push(self, x: torch.Tensor) -> torch.Tensor:
        out = self._combine(self.shortcut.push(x), self.block.push(x))
        return out if out is not None else x[..., :0]

    def flush(self) -> torch.Tensor | None:
        out = self._combine(self.shortcut.flush(), self.block.flush())
        if self._pending is not None and self._pending.shape[-1]:
            raise AssertionError("residual block: the shortcut and the block ended at different lengths")
        return out


class Chain(Stage):
    def __init__(self, stages: list[Stage]):
        self.stages = stages

    def push(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage.push(x)
        return x

    def flush(self) -> torch.Tensor | None:
        y: torch.Tensor | None = None
        for stage in self.stages:
            parts = []
            if y is not None and y.shape[-1]:
                parts.append(stage.push(y))
            tail = stage.flush()
            if tail is not None:
                parts.append(tail)
            y = _cat(parts) if parts else None
        return y


def stage_for(module: nn.Module) -> Stage:
    name = type(module).__name__
    if name == "EncodecConv1d":
        return Conv(module)
    if name == "EncodecConvTranspose1d":
        return ConvTranspose(module)
    if name == "EncodecLSTM":
        return Lstm(module)
    if name == "EncodecResnetBlock":
        return Residual(module)
    if isinstance(module, nn.ELU | nn.Identity):
        return Pointwise(module)
    raise NotStreamable(f"no streaming version of {name}")


def streaming(module: nn.Module) -> Chain:
    """A fresh streaming runner for an EncodecEncoder or EncodecDecoder (its `layers`)."""
    return Chain([stage_for(m) for m in module.layers])


def can_stream(module: nn.Module) -> bool:
    try:
        streaming(module)
    except NotStreamable:
        return False
    return True
