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
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

# The measure itself is the tests' (test/unit/test_isa.py holds the CPU default to it).
from engine_reference import PROMPTS, as_lm, generate_codes, teacher_forced, tiny_lm  # noqa: E402


def _models(names: list[str]):
    from bench.common import build_real_shape

    for name in names:
        if name == "tiny":
            yield "tiny musicgen-small", tiny_lm("musicgen-small")
        else:
            yield f"{name} (real shape)", as_lm(name, build_real_shape(name))


@torch.inference_mode()
def free_running(lm, precisions: list[str], frames: int) -> dict:
    from server.engine.decode import DecodeRequest
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
