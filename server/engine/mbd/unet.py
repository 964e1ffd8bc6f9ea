"""The per-band denoiser of Multi-Band Diffusion: a 1-D convolutional U-Net.

Parameter names are those of the published checkpoint (facebook/multiband-diffusion), so its state
dict loads strictly. The shape comes from the checkpoint's `diffusion_unet` config: `depth` encoder
layers (strided conv, group norm, ReLU, residual blocks) widening by `growth` up to `max_channels`,
mirrored decoder layers (transposed conv) with skip connections, a step embedding added after the
first encoder layer (and after every one with `emb_all_layers`), and EnCodec's latent projected by a
1x1 conv (`conv_codec`) and added to the deepest skip. The bottleneck itself is zero unless a BiLSTM
fills it; the transformer bottleneck is not supported (no published MBD uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetShape:
    channels: int  # audio channels in and out (1)
    num_steps: int  # diffusion steps the step embedding covers (1000)
    hidden: int = 24
    depth: int = 3
    growth: float = 2.0
    max_channels: int = 10_000
    emb_all_layers: bool = False
    bilstm: bool = False
    codec_dim: int | None = None
    kernel: int = 4
    stride: int = 2
    norm_groups: int = 4
    res_blocks: int = 1

    def widths(self) -> list[tuple[int, int]]:
        """(in, out) channels of each encoder layer, outermost first."""
        out, chin, hidden = [], self.channels, self.hidden
        for _ in range(self.depth):
            out.append((chin, hidden))
            chin, hidden = hidden, min(int(hidden * self.growth), self.max_channels)
        return out


class _Residual(nn.Module):
    """norm, ReLU, dilated conv (kernel 3), twice, plus the input."""

    def __init__(self, channels: int, groups: int, dilation: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(h)))


def _residuals(channels: int, shape: UNetShape) -> nn.Sequential:
    return nn.Sequential(*[_Residual(channels, shape.norm_groups, 2**i) for i in range(shape.res_blocks)])


class _Down(nn.Module):
    def __init__(self, chin: int, chout: int, shape: UNetShape):
        super().__init__()
        self.conv = nn.Conv1d(chin, chout, shape.kernel, shape.stride, (shape.kernel - shape.stride) // 2, bias=False)
        self.norm = nn.GroupNorm(shape.norm_groups, chout)
        self.res_blocks = _residuals(chout, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.conv.stride[0]
        x = F.pad(x, (0, (stride - x.shape[-1] % stride) % stride))  # a whole number of strides
        return self.res_blocks(F.relu(self.norm(self.conv(x))))


class _Up(nn.Module):
    def __init__(self, chin: int, chout: int, shape: UNetShape):
        super().__init__()
        self.res_blocks = _residuals(chin, shape)
        self.norm = nn.GroupNorm(shape.norm_groups, chin)
        self.convtr = nn.ConvTranspose1d(
            chin, chout, shape.kernel, shape.stride, (shape.kernel - shape.stride) // 2, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(F.relu(self.norm(self.res_blocks(x))))


class _BiLSTM(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=2, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)


class DiffusionUNet(nn.Module):
    def __init__(self, shape: UNetShape):
        super().__init__()
        self.shape = shape
        widths = shape.widths()
        self.embedding = nn.Embedding(shape.num_steps, shape.hidden)
        if shape.emb_all_layers:
            self.embeddings = nn.ModuleList(nn.Embedding(shape.num_steps, out) for _, out in widths[1:])
        self.encoders = nn.ModuleList(_Down(chin, chout, shape) for chin, chout in widths)
        self.decoders = nn.ModuleList(_Up(chout, chin, shape) for chin, chout in reversed(widths))
        deepest = widths[-1][1]
        if shape.bilstm:
            self.bilstm = _BiLSTM(deepest)
        if shape.codec_dim is not None:
            self.conv_codec = nn.Conv1d(shape.codec_dim, deepest, 1)

    def forward(self, x: torch.Tensor, step: int, condition: torch.Tensor | None) -> torch.Tensor:
        """The noise estimate for `x` [B, C, T] at diffusion step `step`, given EnCodec's latent
        `condition` [B, codec_dim, frames]."""
        steps = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        skips = []
        z = x
        for i, encoder in enumerate(self.encoders):
            z = encoder(z)
            if i == 0:
                z = z + self.embedding(steps)[:, :, None]
            elif self.shape.emb_all_layers:
                z = z + self.embeddings[i - 1](steps)[:, :, None]
            skips.append(z)
        if self.shape.codec_dim is not None:
            if condition is None:
                raise ValueError("this denoiser is conditioned on EnCodec's latent; none was given")
            cond = self.conv_codec(condition)
            if cond.shape[-1] > 2 * z.shape[-1]:
                raise ValueError(
                    f"the condition ({cond.shape[-1]} frames) is too long for the bottleneck ({z.shape[-1]})"
                )
            skips[-1] = z = z + F.interpolate(cond, z.shape[-1])  # nearest, onto the bottleneck's frames
        z = self.bilstm(z) if self.shape.bilstm else torch.zeros_like(z)
        for decoder in self.decoders:
            skip = skips.pop()
            z = decoder(z[..., : skip.shape[-1]] + skip)
        return z[..., : x.shape[-1]]
