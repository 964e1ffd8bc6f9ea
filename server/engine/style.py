"""MusicGen-Style's style conditioner: an audio excerpt -> the tokens the decoder's prefix starts with.

As AudioCraft's StyleConditioner computes them (arXiv 2407.12563): an excerpt of the style audio (at the
model's rate, mono) goes to 24 kHz and through MERT, a frozen HuBERT-like encoder (75 frames/s, 768
wide, transformers' HubertModel over MERT's weights: server/models/convert/mert.py); a linear layer takes
it to the conditioner's width, a small non-causal transformer encoder and a BatchNorm (running
statistics) follow, then a residual VQ with the first `eval_q` codebooks (the information bottleneck),
keeping every `ds_factor`-th frame (75 / 15 = 5 tokens a second). The model's own projection to the
decoder's width (audio_enc_to_dec_proj of the converted MusicgenMelody class) comes last.

No style audio is AudioCraft's empty condition: one zero token. The null row of classifier-free
guidance is zeros of the same length (its mask is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.models.musicgen import audiocraft_positions

MERT_SAMPLE_RATE = 24000
MERT_FRAME_RATE_HZ = 75
BATCH_NORM_EPS = 1e-5  # nn.BatchNorm1d's default, as AudioCraft builds it
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class StyleSettings:
    """The conditioner's shape and its inference settings (xp.cfg conditioners.self_wav.style)."""

    dim: int  # its internal width (transformer_scale: 256, 512 or 1024)
    num_heads: int
    num_layers: int  # 0: no transformer (transformer_scale none)
    n_q_out: int  # codebooks it was trained with
    eval_q: int  # codebooks used at inference (the model's default; a request may choose 1..n_q_out)
    bins: int
    ds_factor: int
    excerpt_s: float  # the excerpt's length (`length`; a request may choose 1.5..4.5 s)
    middle: bool  # use_middle_of_segment: the excerpt from the middle (else from a seeded random start)
    batch_norm: bool
    sample_rate: int  # the model's (the style audio comes at this rate)
    mert_width: int = 768

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Attention(nn.Module):
    """Non-causal self-attention without biases, AudioCraft's packed q/k/v layout (in_proj_weight)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        packed = F.linear(x, self.in_proj_weight).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # each [b, heads, t, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _Layer(nn.Module):
    """A pre-norm encoder layer (norm_first, GELU, no biases but the norms')."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.linear1 = nn.Linear(dim, 4 * dim, bias=False)
        self.linear2 = nn.Linear(4 * dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class _Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(dim, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sinusoidal positions added at the input, AudioCraft's table (cos then sin).
        x = x + audiocraft_positions(x.shape[1], x.shape[2]).to(x)[None]
        for layer in self.layers:
            x = layer(x)
        return x


class StyleConditioner(nn.Module):
    """The conditioner's own weights (MERT is separate: `mert`). State names are AudioCraft's, less
    its training-only buffers (server/models/convert/style.py)."""

    def __init__(self, settings: StyleSettings):
        super().__init__()
        s = settings
        self.settings = s
        self.embed = nn.Linear(s.mert_width, s.dim)
        self.transformer = _Encoder(s.dim, s.num_heads, s.num_layers) if s.num_layers else None
        if s.batch_norm:
            self.register_buffer("running_mean", torch.zeros(s.dim))
            self.register_buffer("running_var", torch.ones(s.dim))
        self.codebooks = nn.Parameter(torch.empty(s.n_q_out, s.bins, s.dim), requires_grad=False)
        self.mert: nn.Module | None = None  # transformers' HubertModel over MERT's weights

    def quantize(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual VQ of x [B, T, dim] with the first n_q codebooks: (quantized [B, T, dim], codes
        [B, n_q, T]). Distances in AudioCraft's arithmetic (EuclideanCodebook.quantize)."""
        b, t, d = x.shape
        residual = x.reshape(b * t, d)
        out = torch.zeros_like(residual)
        codes = []
        for book in self.codebooks[:n_q]:
            embed = book.t()
            dist = -(residual.pow(2).sum(1, keepdim=True) - 2 * residual @ embed + embed.pow(2).sum(0, keepdim=True))
            index = dist.max(dim=-1).indices
            chosen = F.embedding(index, book)
            residual = residual - chosen
            out = out + chosen
            codes.append(index.view(b, t))
        return out.view(b, t, d), torch.stack(codes, dim=1)

    def features(self, wav_24k: torch.Tensor) -> torch.Tensor:
        """MERT's last hidden state [B, frames, 768] of 24 kHz audio [B, samples]."""
        if self.mert is None:
            raise RuntimeError("the style conditioner has no MERT feature extractor loaded")
        return self.mert(wav_24k).last_hidden_state

    def forward(self, wav_24k: torch.Tensor, eval_q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(style tokens [B, T', dim] before the projection to the decoder, codes [B, eval_q, T'])."""
        x = self.embed(self.features(wav_24k))
        if self.transformer is not None:
            x = self.transformer(x)
        if self.settings.batch_norm:
            x = F.batch_norm(
                x.transpose(1, 2), self.running_mean, self.running_var, training=False, eps=BATCH_NORM_EPS
            ).transpose(1, 2)
        x, codes = self.quantize(x, eval_q)
        ds = self.settings.ds_factor
        return x[:, ::ds], codes[:, :, ::ds]


@dataclass(frozen=True)
class StyleCondition:
    """One request's style: the decoder-width tokens its prefix starts with, and their codes."""

    states: torch.Tensor  # [tokens, hidden]
    codes: torch.Tensor | None  # [eval_q, tokens]; None for the empty condition
    excerpt_start_s: float | None = None
    excerpt_s: float | None = None  # the excerpt's length and the codebooks used (what the answer says)
    eval_q: int | None = None


def excerpt_start(n_samples: int, excerpt_samples: int, middle: bool, seed: int) -> int:
    """Where the excerpt starts: the middle (use_middle_of_segment), or a start drawn from the request's
    seed (AudioCraft draws it from Python's global random; a seed makes it reproducible)."""
    room = n_samples - excerpt_samples
    if room < 0:
        raise ValueError(f"the style audio ({n_samples} samples) is shorter than the excerpt ({excerpt_samples})")
    if middle:
        return int(room / 2)
    return int(np.random.default_rng(seed).integers(0, room + 1))


def condition(
    conditioner: StyleConditioner,
    project: nn.Module,
    wav: np.ndarray | None,
    excerpt_s: float,
    eval_q: int,
    seed: int,
) -> StyleCondition:
    """The style condition of mono audio `wav` [samples] at the model's rate (None: no style), as
    StyleConditioner.forward gives it for a batch of one: tokens projected by `project`, then masked
    by the audio's length (every token is kept once the audio holds the excerpt)."""
    import julius

    s = conditioner.settings
    param = next(project.parameters())
    if wav is None:
        return StyleCondition(states=torch.zeros(1, param.shape[0], dtype=param.dtype, device=param.device), codes=None)
    n_excerpt = int(excerpt_s * s.sample_rate)
    start = excerpt_start(wav.shape[-1], n_excerpt, s.middle, seed)
    piece = torch.from_numpy(np.ascontiguousarray(wav[start : start + n_excerpt], dtype=np.float32))
    piece = julius.resample_frac(piece[None].to(param.device), s.sample_rate, MERT_SAMPLE_RATE)
    with torch.inference_mode():
        tokens, codes = conditioner(piece, eval_q)
        states = project(tokens.to(param))[0]
    # AudioCraft's mask: the audio's length over the conditioner's downsampling, in tokens.
    per_token = s.sample_rate / MERT_FRAME_RATE_HZ * s.ds_factor
    keep = torch.arange(states.shape[0], device=states.device) < wav.shape[-1] / per_token
    return StyleCondition(
        states=states * keep[:, None].to(states),
        codes=codes[0],
        excerpt_start_s=start / s.sample_rate,
        excerpt_s=excerpt_s,
        eval_q=eval_q,
    )


def token_count(settings: StyleSettings, excerpt_s: float) -> int:
    """How many style tokens an excerpt of this length gives, at most (75 MERT frames a second, every
    ds_factor-th kept; the convolutions' edges only ever lose a frame)."""
    return math.ceil(excerpt_s * MERT_FRAME_RATE_HZ / settings.ds_factor)
