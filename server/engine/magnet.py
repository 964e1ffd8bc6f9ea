"""MAGNeT's iterative masked decoding, over the packed decoder weights (server/engine/fastlm.py).

MAGNeT (audiocraft's MagnetLMModel) fills a fixed-length sequence one codebook at a time. For codebook
`stage` it runs `decoding_steps[stage]` iterations: mask the least confident spans of that codebook
(all of them at first; the count falls on a cosine schedule), run the whole sequence through the
non-causal transformer (classifier-free guidance with a coefficient annealed from max_cfg_coef to
min_cfg_coef as the mask shrinks), sample the masked tokens (temperature annealed linearly to zero,
top-p or top-k), and score each span by its sampled probability for the next masking. Codebook 0
attends everywhere; the later ones only to frames within `subcodes_context`.

Every step below follows audiocraft 1.3.0's `_generate_stage` op for op (the same shapes, the same
order), so greedy decoding gives audiocraft's tokens, and sampling does too given the same random
draws (test/conformance). The draws of `torch.multinomial(probs, 1)` are written out as the
exponential race it runs (argmax(probs / q), q ~ Exp(1)), from each request's own generator.

`MagnetBatch` is the step-able state: requests join (`add`) at any iteration boundary, each with its
own schedule (stage, iteration) and length, and leave when their last codebook is done. One step runs
one iteration of every member: the dense layers over all members' rows at once, attention per member
(its own mask). A request's tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from server.engine.decode import encode_text
from server.engine.errors import UnsupportedRequest
from server.engine.fastlm import FastLM, PackedLinear

DONT_REMASK_ME_SCORE = -1e4  # audiocraft's score for tokens that stay as they are

# The exponential draws one torch.multinomial(probs, 1) makes for probs of this 2-D shape.
Noise = Callable[[tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class MagnetParams:
    """audiocraft's MAGNeT.set_generation_params, with its defaults."""

    use_sampling: bool = True
    temperature: float = 3.0
    top_k: int = 0
    top_p: float = 0.9
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    decoding_steps: tuple[int, ...] = (20, 10, 10, 10)
    anneal_temp: bool = True
    span_scoring: Literal["max", "prod"] = "max"
    span_arrangement: Literal["nonoverlap", "stride1"] = "nonoverlap"


@dataclass(frozen=True)
class MagnetRequest:
    prompt: str  # "" means no text: the null condition
    n_frames: int  # frames asked for; a span-masked model makes the largest multiple of span_len in it
    seed: int
    params: MagnetParams = MagnetParams()
    noise: Noise | None = field(default=None, compare=False)  # None: drawn from the seed's generator


def frames_made(n_frames: int, span_len: int, span_arrangement: str) -> int:
    """The frames a request of n_frames comes back with: non-overlapping spans trim the end to a
    whole number of spans, as audiocraft does."""
    if span_len > 1 and span_arrangement == "nonoverlap":
        return span_len * (n_frames // span_len)
    return n_frames


def frames_for(lm, duration_s: float, span_arrangement: str) -> int:
    """The frames to ask for `duration_s` of a MAGNeT model: whole spans that cover it, at most its
    training segment (whose last partial span audiocraft drops: 10 s makes 498 frames, 9.96 s)."""
    span = lm.masking.span_len
    want = math.ceil(duration_s * lm.frame_rate_hz - 1e-9)
    if span > 1 and span_arrangement == "nonoverlap":
        want = span * math.ceil(want / span)
    return min(want, lm.segment_frames)


def sample_top_p(probs: torch.Tensor, p: float, noise: Noise) -> torch.Tensor:
    """audiocraft.utils.utils.sample_top_p: [..., V] -> [..., 1]; probs is left alone."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    probs_sum = torch.cumsum(probs_sort, dim=-1)
    mask = probs_sum - probs_sort > p
    probs_sort *= (~mask).float()
    probs_sort.div_(probs_sort.sum(dim=-1, keepdim=True))
    return torch.gather(probs_idx, -1, multinomial(probs_sort, noise))


def sample_top_k(probs: torch.Tensor, k: int, noise: Noise) -> torch.Tensor:
    """audiocraft.utils.utils.sample_top_k: like audiocraft, it renormalises `probs` in place (the
    span scores then read those probabilities)."""
    top_k_value, _ = torch.topk(probs, k, dim=-1)
    min_value_top_k = top_k_value[..., [-1]]
    probs *= (probs >= min_value_top_k).float()
    probs.div_(probs.sum(dim=-1, keepdim=True))
    return multinomial(probs, noise)


def multinomial(probs: torch.Tensor, noise: Noise) -> torch.Tensor:
    """torch.multinomial(probs.reshape(-1, V), 1) reshaped back, as its exponential race."""
    flat = probs.reshape(-1, probs.shape[-1])
    q = noise(tuple(flat.shape))
    return (flat / q).argmax(dim=-1, keepdim=True).reshape(*probs.shape[:-1], 1)


class _Member:
    """One request's schedule: which codebook, which iteration, its scores and tokens."""

    def __init__(self, handle: int, request: MagnetRequest, lm, fast: FastLM, device: torch.device):
        p = request.params
        masking = lm.masking
        self.handle, self.request, self.params = handle, request, p
        self.k_books, self.card = fast.num_codebooks, fast.vocab_size
        self.mask_id = self.card  # audiocraft's special token (the embedding tables' last row)
        self.span_len = masking.span_len
        self.T = frames_made(request.n_frames, self.span_len, p.span_arrangement)
        self.chunk_masking = self.span_len > 1 and p.span_arrangement == "nonoverlap"
        self.gen = torch.full((1, self.k_books, self.T), self.mask_id, dtype=torch.long, device=device)
        self.total_steps = sum(p.decoding_steps)
        self.done_steps = 0
        self.stage = -1
        self.cross_k, self.cross_v = fast._cross_kv(encode_text(lm, request.prompt, with_null=True))
        self.band = _band_mask(self.T, masking.subcodes_context, device)
        if request.noise is not None:
            self.noise = request.noise
        else:
            generator = torch.Generator(device=device).manual_seed(request.seed)
            self.noise = lambda shape: torch.empty(shape, device=device).exponential_(1, generator=generator)
        self._next_stage()

    @property
    def finished(self) -> bool:
        return self.stage >= len(self.params.decoding_steps)

    def _next_stage(self) -> None:
        self.stage += 1
        if self.finished:
            return
        n = self.params.decoding_steps[self.stage]
        device = self.gen.device
        self.timesteps = n
        self.steps_left = list(reversed(range(n)))
        self.mask_ps = torch.cos(torch.linspace(0, 1, n, device=device) * math.pi * 0.5)
        self.iteration = 0
        self.stage_seq = torch.full((1, 1, self.T), self.mask_id, dtype=torch.long, device=device)
        if self.chunk_masking:
            self.n_chunks = self.T // self.span_len
            self.scores = torch.zeros((1, 1, self.n_chunks), dtype=torch.float32, device=device)
            self.to_gen = self.n_chunks
        else:
            self.scores = torch.zeros((1, 1, self.T), dtype=torch.float32, device=device)
            self.to_gen = self.T

    @property
    def attn_mask(self) -> torch.Tensor | None:
        return self.band if self.stage > 0 else None

    def mask(self) -> None:
        """Re-mask the least confident spans for this iteration (the input of the next forward)."""
        mask_p = self.mask_ps[self.iteration]
        self.mask_p = mask_p
        num_masked = max(int((mask_p * self.to_gen).item()), 1)
        if self.params.span_arrangement == "stride1" and self.span_len > 1:
            mask = _least_probable_span_masking(self.scores, num_masked, self.span_len)
            self.stage_seq[mask] = self.mask_id
        else:
            masked = self.scores.topk(num_masked, dim=-1).indices
            if self.chunk_masking:
                chunks = torch.full((1, 1, self.n_chunks), False, dtype=torch.bool, device=self.gen.device)
                self.chunks_mask = chunks.scatter(2, masked, True)
                mask = torch.repeat_interleave(self.chunks_mask, self.span_len, dim=-1)
                self.stage_seq[mask] = self.mask_id
            else:
                self.stage_seq = self.stage_seq.scatter(2, masked, self.mask_id)
        self.gen[:, [self.stage], :] = self.stage_seq

    def accept(self, cond_logits: torch.Tensor, uncond_logits: torch.Tensor) -> None:
        """This iteration's logits of the stage's codebook [1, 1, T, card], conditional and null:
        guide, sample the masked tokens, score the spans; then on to the next iteration or codebook."""
        p = self.params
        mask_p = float(self.mask_p)
        coef = mask_p * p.max_cfg_coef + (1 - mask_p) * p.min_cfg_coef
        logits = uncond_logits + (cond_logits - uncond_logits) * coef
        steps_left = self.steps_left[self.iteration]
        t = p.temperature * (steps_left / self.timesteps) if p.anneal_temp else p.temperature
        probs = torch.softmax(logits / max(t, 1e-2), dim=-1)
        if p.use_sampling:
            if p.top_p > 0.0:
                sampled = sample_top_p(probs, p.top_p, self.noise)
            elif p.top_k > 0:
                sampled = sample_top_k(probs, p.top_k, self.noise)
            else:
                sampled = multinomial(probs, self.noise)
        else:
            sampled = torch.argmax(logits, dim=-1, keepdim=True)
        mask = self.stage_seq == self.mask_id
        self.stage_seq = torch.where(mask, sampled[..., 0], self.stage_seq)
        self.gen[:, [self.stage], :] = self.stage_seq
        sampled_probs = torch.gather(probs, 3, sampled)[..., 0]
        if self.chunk_masking:
            per_span = sampled_probs.reshape((1, 1, self.n_chunks, -1))
            if p.span_scoring == "max":
                scores = 1 - torch.max(per_span, dim=-1)[0]
            else:
                scores = torch.sum(-torch.log(per_span), dim=-1)
            self.scores = scores.masked_fill(~self.chunks_mask, DONT_REMASK_ME_SCORE)
        else:
            self.scores = (-torch.log(sampled_probs)).masked_fill(~mask, DONT_REMASK_ME_SCORE)
        self.done_steps += 1
        self.iteration += 1
        if self.iteration >= self.timesteps:
            self._next_stage()


def _band_mask(T: int, context: int, device: torch.device) -> torch.Tensor | None:
    """audiocraft's restricted_context_attn_mask: 0 within `context` frames, -inf beyond (None: all)."""
    if context < 0:
        return None
    q = torch.arange(T, device=device).view(-1, 1)
    k = torch.arange(T, device=device).view(1, -1)
    valid = torch.abs(q - k) <= context
    zero = torch.zeros([], device=device, dtype=torch.float32)
    return torch.where(valid, zero, torch.full([], float("-inf"), device=device, dtype=torch.float32))


def _spans_mask(span_starts: torch.Tensor, T: int, span_len: int, device: torch.device) -> torch.Tensor:
    """audiocraft's _construct_spans_mask: [1, 1, T], True over span_len frames from each start."""
    mask = torch.full((1, 1, T), False, device=device)
    mask[:, :, span_starts] = True
    shifted = mask.clone()
    for _ in range(span_len - 1):
        shifted = torch.concat((torch.full((1, 1, 1), False, device=device), shifted[:, :, :-1]), dim=-1)
        mask = torch.logical_or(mask, shifted)
    return mask


def _least_probable_span_masking(scores: torch.Tensor, num_masked_trg: int, span_len: int) -> torch.Tensor:
    """audiocraft's overlapping-span masking (span_arrangement 'stride1'): the least probable spans,
    as many as bring the masked count closest to the target (a binary search on their number)."""
    T = scores.shape[-1]
    device = scores.device
    span_scores = scores.unfold(2, span_len, 1).sum(dim=-1)
    spans_by_scores = torch.argsort(span_scores[0, 0], descending=True)
    num_masked_trg = max(num_masked_trg, span_len)
    min_u = num_masked_trg // span_len
    max_u = num_masked_trg - span_len + 1
    mid = round(0.5 * (min_u + max_u))
    if mid == min_u or mid == max_u:
        return _spans_mask(spans_by_scores[:mid], T, span_len, device)
    while mid > min_u and mid < max_u:
        mask = _spans_mask(spans_by_scores[:mid], T, span_len, device)
        if mask.sum() > num_masked_trg:
            max_u = mid
        else:
            min_u = mid
        mid = round(0.5 * (min_u + max_u))
    return mask


def forward(fast: FastLM, members: list[_Member]) -> list[torch.Tensor]:
    """One pass of the non-causal transformer over every member's sequence (its conditional and null
    rows), each with its own attention mask. Returns, per member, the logits of its stage's codebook
    [2, T, card] (conditional, null), fp32.

    The dense layers run once over all members' rows; attention runs per member. Like audiocraft,
    the null row's cross-attention adds exactly 0 (its text states are zero), so only conditional rows
    cross-attend."""
    act = fast.act_dtype
    hidden, heads, head_dim = fast.hidden, fast.heads, fast.head_dim
    parts, spans, cond_index = [], [], []
    start = 0
    for m in members:
        x = fast.embed_tokens(m.gen[0].t()) + fast.positions[: m.T]  # [T, hidden]
        parts += [x, x]
        spans.append((start, start + 2 * m.T))
        cond_index.append(torch.arange(start, start + m.T, device=x.device))
        start += 2 * m.T
    h = torch.cat(parts)
    cond_rows = torch.cat(cond_index)
    cond_spans, c = [], 0
    for m in members:
        cond_spans.append((c, c + m.T))
        c += m.T

    def heads_of(x: torch.Tensor, rows: int, length: int) -> torch.Tensor:  # [rows * L, hidden] -> [rows, H, L, d]
        return x.reshape(rows, length, heads, head_dim).transpose(1, 2)

    def linear(packed: PackedLinear, x: torch.Tensor, row_spans: list[tuple[int, int]]) -> torch.Tensor:
        """One call over every member's rows; the dynamic int8 kernel once per member instead (its
        single-request path quantizes differently from its batched one, so a member would not get
        the bits it gets alone). The calls are compute-bound here: splitting them costs nothing."""
        if packed.kind != "qdynamic":
            return packed(x, row_spans, blocked=False)
        return torch.cat([packed(x[a:b], None, blocked=False) for a, b in row_spans])

    for li, layer in enumerate(fast.layers):
        qkv = linear(layer.qkv, layer.norm_self(h).to(act), spans)
        att = torch.empty(h.shape[0], hidden, device=h.device, dtype=qkv.dtype)
        for m, (r0, r1) in zip(members, spans, strict=True):
            q, k, v = (heads_of(t, 2, m.T) for t in qkv[r0:r1].split(hidden, dim=-1))
            mask = m.attn_mask
            mask = None if mask is None else mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=fast.scaling)
            att[r0:r1] = out.transpose(1, 2).reshape(2 * m.T, hidden)
        h = h + linear(layer.out, att.to(act), spans).float()

        if layer.cross_q is not None:
            cq = linear(layer.cross_q, layer.norm_cross(h.index_select(0, cond_rows)).to(act), cond_spans)
            catt = torch.empty(cq.shape[0], hidden, device=h.device, dtype=act)
            for m, (r0, r1) in zip(members, cond_spans, strict=True):
                out = F.scaled_dot_product_attention(
                    heads_of(cq[r0:r1].to(act), 1, m.T), m.cross_k[li], m.cross_v[li], scale=fast.scaling
                )
                catt[r0:r1] = out.transpose(1, 2).reshape(m.T, hidden)
            cross = linear(layer.cross_out, catt, cond_spans).float()
            for (r0, _), (c0, c1) in zip(spans, cond_spans, strict=True):
                h[r0 : r0 + c1 - c0] += cross[c0:c1]  # h is this layer's own tensor: in place is safe

        f = layer.activation(linear(layer.fc1, layer.norm_ffn(h).to(act), spans))
        h = h + linear(layer.fc2, f, spans).float()

    out = fast.final_norm(h).to(act)
    logits = []
    for m, (r0, r1) in zip(members, spans, strict=True):
        books = fast.heads_out(out[r0:r1], [(0, r1 - r0)], blocked=False).float()
        logits.append(books.view(2, m.T, fast.num_codebooks, fast.vocab_size)[:, :, m.stage])
    return logits


class MagnetBatch:
    """A running batch of MAGNeT requests on one model, advanced one decoding iteration at a time.

    Not thread-safe: one thread calls add / remove / step / pop."""

    def __init__(self, lm):
        masking = getattr(lm, "masking", None)
        if masking is None:
            raise UnsupportedRequest(f"{lm.spec.name} is not a MAGNeT model", field="model")
        self.lm = lm
        self.fast: FastLM = lm.fast_lm()
        self.device = lm.device
        self._members: list[_Member] = []
        self._done: dict[int, torch.Tensor] = {}
        self._handles = itertools.count()

    @torch.inference_mode()
    def add(self, request: MagnetRequest) -> int:
        """Join the batch at the next iteration: encodes the text and its cross-attention K/V."""
        steps = request.params.decoding_steps
        if len(steps) != self.fast.num_codebooks or min(steps) < 1:
            raise UnsupportedRequest(
                f"decoding_steps needs {self.fast.num_codebooks} counts of at least 1 (one per codebook)",
                field="decoding_steps",
            )
        made = frames_made(request.n_frames, self.lm.masking.span_len, request.params.span_arrangement)
        if made < max(1, self.lm.masking.span_len):
            raise UnsupportedRequest(
                f"{request.n_frames} frames is shorter than one masking span of {self.lm.spec.name}",
                hint="ask for a longer duration", field="duration",
            )  # fmt: skip
        if made > self.fast.max_positions:
            raise UnsupportedRequest(f"{made} frames exceed {self.lm.spec.name}'s positions", field="duration")
        member = _Member(next(self._handles), request, self.lm, self.fast, self.device)
        self._members.append(member)
        return member.handle

    def remove(self, handle: int) -> bool:
        self._done.pop(handle, None)
        before = len(self._members)
        self._members = [m for m in self._members if m.handle != handle]
        return len(self._members) < before

    def pop(self, handle: int) -> torch.Tensor:
        """The codes [K, frames] of a finished request; forgets it."""
        return self._done.pop(handle)

    def __len__(self) -> int:
        return len(self._members)

    def progress(self, handle: int) -> tuple[int, int]:
        """(iterations done, iterations in all) of an active request."""
        for m in self._members:
            if m.handle == handle:
                return m.done_steps, m.total_steps
        raise KeyError(handle)

    @torch.inference_mode()
    def step(self) -> list[int]:
        """One decoding iteration of every member. Returns the handles that finished on it."""
        if not self._members:
            return []
        members = list(self._members)
        for m in members:
            m.mask()
        for m, logits in zip(members, forward(self.fast, members), strict=True):
            m.accept(logits[0][None, None], logits[1][None, None])
        finished = [m for m in members if m.finished]
        for m in finished:
            self._done[m.handle] = m.gen[0].clone()
        gone = {m.handle for m in finished}
        self._members = [m for m in self._members if m.handle not in gone]
        return [m.handle for m in finished]
