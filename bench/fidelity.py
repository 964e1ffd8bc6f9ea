"""Precision fidelity: each precision's decoder against float32, on the same weights and prompts.

    .venv/bin/python bench/fidelity.py                  # real-shape musicgen-small + the tiny model
    .venv/bin/python bench/fidelity.py --steps 50 --models tiny

Teacher-forced: every precision is fed the float32 engine's greedy tokens, so each step compares
like with like. Per step and codebook it measures
- the logit error: max |logit - fp32 logit| over the vocabulary, relative to the std of fp32's logits;
- greedy agreement: the argmax of the guided logits (cfg 3) equals fp32's;
- sampled agreement: with the same noise (the same seed), top-k 250 / temperature 1 sampling picks
  the same token as fp32 (1 - this is about the total-variation distance of the two distributions).
Free-running: the greedy float32 token sequence against each precision's own greedy sequence
(once they differ, an autoregressive model goes its own way: the step of the first difference
is reported). The float32 engine is also checked bit for bit against transformers' decoder.

Random weights give flat logits (the top token holds ~2 % of the mass at the real shape), the
hardest case for agreement; a trained model's peaked distributions agree more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = [
    "upbeat electronic music with a groovy bassline",
    "calm piano melody, 90 bpm, relaxing",
    "epic orchestral soundtrack with choir and brass",
]


def _models(names: list[str]):
    from bench.common import build_real_shape, loaded_model
    from lib.catalogue import get_spec
    from server.tiny.musicgen import build_tiny_model

    for name in names:
        if name == "tiny":
            yield "tiny musicgen-small", loaded_model("musicgen-small", build_tiny_model(get_spec("musicgen-small")))
        else:
            yield f"{name} (real shape)", loaded_model(name, build_real_shape(name))


def _topk_probs(logits: torch.Tensor, k: int = 250) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    kth = torch.topk(probs, k, dim=-1).values[..., -1:]
    probs = probs.masked_fill(probs < kth, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


@torch.inference_mode()
def teacher_forced(lm, precisions: list[str], steps: int) -> dict:
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


@torch.inference_mode()
def free_running(lm, precisions: list[str], frames: int) -> dict:
    from server.engine.decode import DecodeRequest, generate_codes
    from server.engine.fastlm import FastLM

    out = {}
    original = lm.fast
    try:
        codes = {}
        for p in ["float32", *precisions]:
            lm.fast = FastLM(lm.model.decoder, p, torch.device("cpu"))
            codes[p] = [
                generate_codes(lm, [DecodeRequest(prompt, frames, seed=0, temperature=0.0)])[0] for prompt in PROMPTS
            ]
        for p in precisions:
            same, first = [], []
            for a, b in zip(codes["float32"], codes[p], strict=True):
                same.append((a == b).double().mean().item())
                diff = (a != b).any(dim=0).nonzero()
                first.append(int(diff[0]) if len(diff) else frames)
            out[p] = {"identical": sum(same) / len(same), "first_diff": min(first)}
    finally:
        lm.fast = original
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="musicgen-small,tiny")
    parser.add_argument("--precisions", default="bfloat16,int8")
    parser.add_argument("--steps", type=int, default=60, help="teacher-forced steps per prompt")
    parser.add_argument("--frames", type=int, default=100, help="free-running greedy frames per prompt")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    print(
        "| model | precision | logit error, mean / max (x fp32 logit std) | greedy agreement | "
        "sampled agreement, same seed | free-running greedy: tokens equal, first difference |"
    )
    print("|---|---|---|---|---|---|")
    for label, lm in _models(args.models.split(",")):
        lm.fast = None
        tf = teacher_forced(lm, precisions, args.steps)
        fr = free_running(lm, precisions, args.frames)
        print(f"| {label} | float32 | bit-identical to transformers: {tf['float32_bitwise_vs_transformers']} | | | |")
        for p in precisions:
            t, f = tf[p], fr[p]
            print(
                f"| {label} | {p} | {t['err_mean']:.4f} / {t['err_max']:.3f} | {t['greedy'] * 100:.1f} % "
                f"| {t['sampled'] * 100:.1f} % | {f['identical'] * 100:.0f} %, frame {f['first_diff']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
