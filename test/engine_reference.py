"""The engine's test oracles and drivers: code the tests (and bench/fidelity.py) run the engine with,
kept out of the service.

- `generate_codes`: a fixed list of requests run to the end on one DecodeBatch, with progress and
  cancellation (the service drives DecodeBatch from its job runner instead);
- `generate`: one AudioRequest, window after window, alone;
- `sample`: one request's sampler, written plainly, that SamplerBatch must match bit for bit;
- `teacher_forced`: each precision's decoder step against float32's, and float32's against
  transformers' decoder (test_isa.py holds the default to its documented drift with it);
- `as_lm` / `tiny_lm`: a model built in memory, prepared as the loader prepares one;
- `batch_rows`, `held`: what a test reads of a batch, and a lease held for a block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lib.catalogue import get_spec
from server.engine.decode import DecodeBatch, DecodeRequest
from server.engine.sampling import keep_top_p
from server.engine.text_to_audio import AudioRequest, LongForm, Waveform
from server.models.loaded import TextToAudioLM

# on_step(step, total_steps); is_cancelled(request_index) -> bool
StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[int], bool]


class Cancelled(Exception):
    """Every request of the batch was cancelled."""


@torch.inference_mode()
def generate_codes(
    lm: TextToAudioLM,
    requests: Sequence[DecodeRequest],
    on_step: StepCallback | None = None,
    is_cancelled: CancelCheck | None = None,
) -> list[torch.Tensor | None]:
    """Token codes [K, n_frames] per request (None for a request cancelled mid-way).

    Each request leaves the batch as soon as it is done or cancelled; on_step counts steps of the
    longest request."""
    batch = DecodeBatch(lm)
    handles = [batch.add(r) for r in requests]
    results: dict[int, torch.Tensor] = {h: batch.pop(h) for h in batch.finished()}
    total = max((n - done for done, n in map(batch.progress, batch.active)), default=0)
    cancelled: set[int] = set()
    step = 0
    while len(batch):
        step += 1
        for handle in batch.step():
            results[handle] = batch.pop(handle)
        if on_step is not None:
            on_step(step, total)
        if is_cancelled is not None:
            live = set(batch.active)
            for i, handle in enumerate(handles):
                if handle in live and is_cancelled(i):
                    batch.remove(handle)
                    cancelled.add(i)
            if len(cancelled) == len(requests):
                raise Cancelled()
    return [results.get(h) for h in handles]


def generate(lm: TextToAudioLM, item: AudioRequest, stride_s: float, on_window=None) -> Waveform:
    """One request, window after window, alone (the service batches windows through the job runner)."""
    plan = LongForm(lm, item, stride_s)
    while not plan.done:
        plan.accept(generate_codes(lm, [plan.request()])[0])
        if on_window is not None:
            on_window(plan)
    return plan.waveform()


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
        probs = keep_top_p(probs, top_p)
    elif top_k > 0:
        kth = torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1).values[..., -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def batch_rows(batch: DecodeBatch) -> int:
    """Decoder rows a batch has in use (2 per guided request)."""
    return sum(m.rows for m in batch._members)


@contextlib.contextmanager
def held(registry, name: str):
    """The model leased for the block, as a running job holds it."""
    lm = registry.acquire(name)
    try:
        yield lm
    finally:
        registry.release(lm.spec.name)


def as_lm(name: str, model) -> TextToAudioLM:
    """A built float32 MusicGen-class model as the loader prepares it, on the CPU (the tiny tokenizer
    stands in for t5-base's). Its transformers decoder stays usable: the reference."""
    from server.models.musicgen import prepare
    from server.tiny.tokenizer import build_tokenizer

    return prepare(model, get_spec(name), build_tokenizer(), torch.device("cpu"), "float32", Path("/dev/null"))


def tiny_lm(name: str = "musicgen-small") -> TextToAudioLM:
    from server.tiny.musicgen import build_tiny_model

    return as_lm(name, build_tiny_model(get_spec(name)))


PROMPTS = [
    "upbeat electronic music with a groovy bassline",
    "calm piano melody, 90 bpm, relaxing",
    "epic orchestral soundtrack with choir and brass",
]


def _topk_probs(logits: torch.Tensor, k: int = 250) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    kth = torch.topk(probs, k, dim=-1).values[..., -1:]
    probs = probs.masked_fill(probs < kth, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


@torch.inference_mode()
def teacher_forced(lm: TextToAudioLM, precisions: list[str], steps: int) -> dict:
    """Every precision fed the float32 engine's greedy tokens for `steps` steps per prompt. Per
    precision: the mean and max logit error (in units of fp32's logit std), and the share of greedy
    and of sampled (top-k 250, same noise) tokens equal to fp32's. `float32_bitwise_vs_transformers`:
    float32's logits equal transformers' decoder's (with a DynamicCache) at every step."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    from server.engine.decode import encode_text
    from server.engine.fastlm import FastLM

    cpu = torch.device("cpu")
    fasts = {p: FastLM(lm.model.decoder, p, cpu) for p in ["float32", *precisions]}
    k_books = lm.num_codebooks
    sums = {p: torch.zeros(4, dtype=torch.float64) for p in precisions}  # err sum, err max, greedy, sampled
    count = 0
    bitwise = True
    noise_gen = torch.Generator().manual_seed(0)
    for prompt in PROMPTS:
        states = encode_text(lm, prompt, with_null=True)
        caches = {p: f.new_cache(2, steps, states) for p, f in fasts.items()}
        ref_cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        mask = torch.tensor([[1] * states.shape[1], [0] * states.shape[1]])
        tokens = torch.full((2, k_books), lm.start_token_id)
        for _ in range(steps):
            out = {p: f.step(tokens, [caches[p]], torch.tensor([0]), 2) for p, f in fasts.items()}
            hf = lm.model.decoder(
                input_ids=tokens.reshape(-1, 1),
                encoder_hidden_states=states,
                encoder_attention_mask=mask,
                cache=ref_cache,
                use_cache=True,
            ).logits[:, -1]
            ref = out["float32"]
            bitwise &= torch.equal(ref, hf.view_as(ref))
            guided_ref = ref[1] + (ref[0] - ref[1]) * 3.0
            std = ref.std(dim=-1)  # [2, K]
            noise = torch.empty(guided_ref.shape).exponential_(1, generator=noise_gen)
            sampled_ref = (_topk_probs(guided_ref) / noise).argmax(-1)
            greedy_ref = guided_ref.argmax(-1)
            for p in precisions:
                got = out[p]
                err = (got - ref).abs().amax(dim=-1) / std  # [2, K]
                guided = got[1] + (got[0] - got[1]) * 3.0
                sums[p][0] += err.mean().item()
                sums[p][1] = max(sums[p][1].item(), err.max().item())
                sums[p][2] += (guided.argmax(-1) == greedy_ref).double().mean().item()
                sums[p][3] += ((_topk_probs(guided) / noise).argmax(-1) == sampled_ref).double().mean().item()
            count += 1
            tokens = greedy_ref.view(1, -1).expand(2, -1).contiguous()
    result = {
        p: {
            "err_mean": sums[p][0].item() / count,
            "err_max": sums[p][1].item(),
            "greedy": sums[p][2].item() / count,
            "sampled": sums[p][3].item() / count,
        }
        for p in precisions
    }
    result["float32_bitwise_vs_transformers"] = bitwise
    return result
