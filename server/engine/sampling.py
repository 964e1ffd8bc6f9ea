"""Choosing the next token per codebook from guided logits, as AudioCraft does:
softmax(logits / temperature), then top-p (when > 0) or top-k (when > 0), then one draw."""

from __future__ import annotations

import torch


def guide(cond: torch.Tensor, uncond: torch.Tensor, cfg_coef: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance, in the same arithmetic order as transformers' processor, so greedy
    decoding is token-identical to its generate()."""
    return uncond + (cond - uncond) * cfg_coef


def _top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(probs, k, dim=-1).values[..., -1:]
    return probs.masked_fill(probs < kth, 0.0)


def _top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # Keep the smallest prefix whose mass reaches p; the first token always stays.
    drop = (cumulative - sorted_probs) > p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """logits [K, V] for one request -> token ids [K]. temperature 0 is greedy argmax."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p > 0:
        probs = _top_p(probs, top_p)
    elif top_k > 0:
        probs = _top_k(probs, min(top_k, probs.shape[-1]))
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
