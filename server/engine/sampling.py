"""Choosing the next token per codebook from guided logits, as AudioCraft does:
softmax(logits / temperature), then top-p (when > 0) or top-k (when > 0), then one draw.

`SamplerBatch` serves a whole decode batch in a few tensor ops, with the bits each request would get
alone (test/engine_reference.py holds the one-request sampler it is checked against). The draw is
`torch.multinomial(probs, 1)`, written out as the exponential race multinomial itself runs
(argmax(probs / q), q ~ Exp(1) from the request's own generator), so the noise of each request comes
from its own seed while the arithmetic runs once for the batch, with no host synchronisation
(multinomial's input checks sync on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def guide(cond: torch.Tensor, uncond: torch.Tensor, cfg_coef: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance, in the same arithmetic order as transformers' processor, so greedy
    decoding is token-identical to its generate()."""
    return uncond + (cond - uncond) * cfg_coef


def guide_double(
    cond: torch.Tensor, style: torch.Tensor, uncond: torch.Tensor, cfg_coef: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """MusicGen-Style's double classifier-free guidance (arXiv 2407.12563, 4.3), in AudioCraft's
    arithmetic order: the text pushed by beta over the style, the whole by cfg_coef over the null."""
    return uncond + cfg_coef * (style + beta * (cond - style) - uncond)


def keep_top_p(probs: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """probs with all but the top-p nucleus set to 0 (not renormalised)."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # Keep the smallest prefix whose mass reaches p; the first token always stays.
    drop = (cumulative - sorted_probs) > p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def exponential_noise(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The noise torch.multinomial(probs, 1) draws for probs of this shape: same generator state after."""
    return torch.empty(tuple(shape), device=device, dtype=torch.float32).exponential_(1, generator=generator)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_k: int
    top_p: float


class SamplerBatch:
    """Sampling for a fixed list of requests (rebuilt when the batch changes).

    Requests are grouped by rule (greedy, top-k, top-p, plain); each group runs as one set of tensor
    ops. Every op is row-wise, so a request's tokens do not depend on its neighbours.
    """

    def __init__(self, params: Sequence[SamplingParams], vocab: int, device: torch.device):
        self.n = len(params)
        self.device = device

        def idx(rows: list[int]) -> torch.Tensor | None:
            return torch.tensor(rows, dtype=torch.long, device=device) if rows else None

        sampled = [i for i, p in enumerate(params) if p.temperature != 0]
        self.all_greedy = not sampled
        self.sampled = idx(sampled)
        self.sampled_list = sampled
        self.temps = (
            torch.tensor([params[i].temperature for i in sampled], dtype=torch.float32, device=device).view(-1, 1, 1)
            if sampled
            else None
        )
        # Positions inside the sampled group.
        top_p = [j for j, i in enumerate(sampled) if params[i].top_p > 0]
        top_k = [j for j, i in enumerate(sampled) if params[i].top_p <= 0 and params[i].top_k > 0]
        self.top_p = idx(top_p)
        self.top_p_values = (
            torch.tensor([params[sampled[j]].top_p for j in top_p], dtype=torch.float32, device=device).view(-1, 1, 1)
            if top_p
            else None
        )
        self.top_k = idx(top_k)
        ks = [min(params[sampled[j]].top_k, vocab) for j in top_k]
        self.k_max = max(ks) if ks else 0
        self.k_index = torch.tensor(ks, dtype=torch.long, device=device).view(-1, 1, 1) - 1 if ks else None

    def __call__(self, logits: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
        """logits [n, K, V] (guided, fp32) -> tokens [n, K]."""
        chosen = logits.argmax(dim=-1)
        if self.all_greedy:
            return chosen
        probs = torch.softmax(logits.index_select(0, self.sampled) / self.temps, dim=-1)
        if self.top_k is not None:
            part = probs.index_select(0, self.top_k)
            kth = torch.topk(part, self.k_max, dim=-1).values.gather(-1, self.k_index.expand(-1, part.shape[1], 1))
            probs = probs.index_copy(0, self.top_k, part.masked_fill(part < kth, 0.0))
        if self.top_p is not None:
            part = probs.index_select(0, self.top_p)
            probs = probs.index_copy(0, self.top_p, keep_top_p(part, self.top_p_values))
        probs = probs / probs.sum(dim=-1, keepdim=True)
        shape = probs.shape[1:]
        noise = torch.stack([exponential_noise(shape, generators[i], self.device) for i in self.sampled_list])
        return chosen.index_copy(0, self.sampled, (probs / noise).argmax(dim=-1))
