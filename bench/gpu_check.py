"""The GPU check: one command for a machine with a CUDA GPU, torch and transformers, and no network.

    PYTHONPATH=. python bench/gpu_check.py              # on the GPU: real-shape musicgen-small and -medium
    PYTHONPATH=. python bench/gpu_check.py --dry-run    # the same steps on the CPU with tiny shapes

In one run (under 8 minutes on a current datacenter GPU; `--budget-s` skips the timings left once
the budget is spent, and says so) it prints one table of:

- **token identity**: the engine's greedy decode at float32 against transformers' own `generate`
  (greedy, guidance 3) on the same GPU, 5 s of audio: identical, or the first frame that differs;
- **fp16 / bf16 drift**: each half precision fed float32's greedy tokens for 5 s of steps (teacher
  forcing): the share of greedy tokens equal to float32's and the logit error in units of
  float32's logit std (mean and max);
- **speed**: 5 s and 30 s of audio at batch 1 and 8, end to end (T5, every step, EnCodec), the
  engine at float32 and float16 (the CUDA default) against transformers' `generate` (float32,
  sampling top-k 250, guidance 3) on the same GPU;
- **CUDA graphs**: one decode step captured in a CUDA graph and replayed, against the same step run
  eagerly, at the same position (the engine's loop attends over a growing prefix, so a graph per
  step length or a static-shape attention would be needed to use it in the loop; this row says how
  much a step would gain).

The models are random-weight ones of the real shapes (bench/common.py), built on the GPU: nothing is
downloaded, and the compute is the real one. Needs Python 3.12, torch 2.11+ and transformers 5.17+
(it says which package is missing or too old), and about 20 GB of GPU memory for medium.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "test")) if p not in sys.path]  # test/: the transformers oracle

PROMPT = "upbeat electronic music with a groovy bassline and punchy drums, 120 bpm"
FRAME_RATE = 50
# (import name, distribution, minimum version or None): what this check imports.
REQUIRED = [
    ("torch", "torch", (2, 11)),
    ("transformers", "transformers", (5, 17)),
    ("numpy", "numpy", None),
    ("tokenizers", "tokenizers", None),
    ("safetensors", "safetensors", None),
    ("pydantic", "pydantic", None),
    ("yaml", "PyYAML", None),
]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def missing_packages() -> list[str]:
    """What is missing or too old, each as a line that says what to install."""
    problems = []
    for module, dist, minimum in REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.append(f"{dist} is missing ({exc}): pip install {dist}")
            continue
        if minimum is not None:
            found = importlib.metadata.version(dist)
            if _version(found) < minimum:
                want = ".".join(map(str, minimum))
                problems.append(f"{dist} {found} is too old: this check needs {dist}>={want}")
    return problems


# ------------------------------------------------------------------------------------------------
# Models


def build_lm(name: str, device, dry_run: bool):
    """A float32 MusicGen of `name`'s real shape (tiny with dry_run) on the device, prepared as the
    loader prepares it; its transformers model shares the weights (the reference)."""
    import torch
    from transformers import GenerationConfig

    from lib.catalogue import get_spec
    from server.models.musicgen import prepare
    from server.tiny.dims import TINY
    from server.tiny.tokenizer import build_tokenizer

    spec = get_spec(name)
    torch.manual_seed(0)
    if dry_run:
        from server.tiny.musicgen import build_tiny_model

        model = build_tiny_model(spec)
    else:
        from transformers import MusicgenForConditionalGeneration

        from bench.common import real_shape_config

        with torch.device(device):  # initialized on the GPU: seconds, not minutes on the CPU
            model = MusicgenForConditionalGeneration(real_shape_config(name))
        model.generation_config = GenerationConfig(**TINY["generation"])
    model.eval()
    return prepare(model, spec, build_tokenizer(), device, "float32", Path("/dev/null"))


def at_precision(lm, precision: str):
    """The same model with its decoder packed at `precision` (the fp32 weights stay shared)."""
    from server.engine.fastlm import FastLM

    return dataclasses.replace(lm, precision=precision, fast=FastLM(lm.model.decoder, precision, lm.device))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------
# The checks


def transformers_greedy(lm, n_frames: int):
    """transformers' greedy codes [K, frames] (the test suite's oracle, test/transformers_reference.py)."""
    import torch
    from transformers_reference import reference_generate

    from server.engine import delay

    steps = delay.num_steps(n_frames, delay.codebook_delays(lm.num_codebooks, lm.stereo))
    inputs = lm.tokenizer([PROMPT], return_tensors="pt").to(lm.device)
    with torch.inference_mode():
        return reference_generate(lm, **inputs, guidance_scale=3.0, max_new_tokens=steps)[0]


def engine_codes(lm, n_frames: int, batch: int = 1, temperature: float = 0.0) -> list:
    from server.engine.decode import DecodeBatch, DecodeRequest

    decode = DecodeBatch(lm)
    handles = [decode.add(DecodeRequest(PROMPT, n_frames, seed=i, temperature=temperature)) for i in range(batch)]
    while len(decode):
        decode.step()
    return [decode.pop(h) for h in handles]


def check_identity(lm, n_frames: int) -> dict:
    want = transformers_greedy(lm, n_frames).cpu()
    got = engine_codes(lm, n_frames)[0].cpu()
    if got.shape == want.shape and bool((got == want).all()):
        result = f"identical ({got.numel()} tokens)"
    else:
        differs = (got != want).any(dim=0).nonzero() if got.shape == want.shape else None
        first = int(differs[0]) if differs is not None and len(differs) else "shape"
        result = f"DIFFERS from frame {first} ({int((got != want).sum()) if differs is not None else '?'} tokens)"
    return {"check": "greedy token identity vs transformers", "config": "float32", "result": result}


def check_drift(lm32, lm_half, steps: int) -> dict:
    """Teacher-forced: both fed float32's greedy (guided) tokens for `steps` steps."""
    import torch

    from server.engine.decode import encode_text

    device = lm32.device
    with torch.inference_mode():
        states = encode_text(lm32, PROMPT, with_null=True)
        caches = [lm.fast.new_cache(2, steps, states) for lm in (lm32, lm_half)]
        tokens = torch.full((2, lm32.num_codebooks), lm32.start_token_id, device=device)
        cond = torch.tensor([0], device=device)
        errors, agree = [], []
        for _ in range(steps):
            ref, got = (lm.fast.step(tokens, [c], cond, 2) for lm, c in zip((lm32, lm_half), caches, strict=True))
            errors.append(((got - ref).abs().amax(dim=-1) / ref.std(dim=-1)).flatten())
            guided_ref = ref[1] + (ref[0] - ref[1]) * 3.0
            guided = got[1] + (got[0] - got[1]) * 3.0
            agree.append((guided.argmax(-1) == guided_ref.argmax(-1)).float().mean())
            tokens = guided_ref.argmax(-1).view(1, -1).expand(2, -1).contiguous()
        err = torch.cat(errors)
        share = torch.stack(agree).mean().item()
    result = f"greedy agreement {100 * share:.1f} %, logit error mean {err.mean():.3f} / max {err.max():.3f} std"
    return {"check": f"drift vs float32 ({steps} teacher-forced steps)", "config": lm_half.precision, "result": result}


def time_transformers(lm, n_frames: int, batch: int) -> float:
    import torch

    inputs = lm.tokenizer([PROMPT] * batch, return_tensors="pt", padding=True).to(lm.device)

    def once(frames: int) -> None:
        with torch.inference_mode():
            audio = lm.model.generate(
                **inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=frames + 3
            )
        assert audio.shape[0] == batch, audio.shape

    once(8)  # warm-up: kernel selection, allocator
    sync(lm.device)
    started = time.perf_counter()
    once(n_frames)
    sync(lm.device)
    return time.perf_counter() - started


def time_engine(lm, n_frames: int, batch: int) -> float:
    from server.engine.decode import codes_to_audio

    def once(frames: int) -> None:
        for codes in engine_codes(lm, frames, batch, temperature=1.0):
            codes_to_audio(lm, codes)

    once(8)
    sync(lm.device)
    started = time.perf_counter()
    once(n_frames)
    sync(lm.device)
    return time.perf_counter() - started


def check_cuda_graph(lm, repeats: int) -> dict:
    """One guided decode step (batch 1) eager and as a replayed CUDA graph, at the same position."""
    import torch

    from server.engine.decode import encode_text

    row = {"check": "decode step in a CUDA graph (batch 1)", "config": lm.precision}
    fast, device = lm.fast, lm.device
    with torch.inference_mode():
        cache = fast.new_cache(2, 64, encode_text(lm, PROMPT, with_null=True))
        tokens = torch.full((2, lm.num_codebooks), lm.start_token_id, device=device)
        cond = torch.tensor([0], device=device)
        for _ in range(4):
            fast.step(tokens, [cache], cond, 2)
        position = cache.pos

        def eager():
            cache.pos = position  # the same position each time: the same shapes
            return fast.step(tokens, [cache], cond, 2)

        def timed(fn) -> float:
            fn()
            sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync(device)
            return (time.perf_counter() - started) / repeats

        eager_s = timed(eager)
        if device.type != "cuda":
            row["result"] = f"eager step {1e3 * eager_s:.2f} ms; no graph: CUDA graphs need a GPU (dry run)"
            return row
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    eager()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            cache.pos = position
            with torch.cuda.graph(graph):
                captured = fast.step(tokens, [cache], cond, 2)
            graph_s = timed(graph.replay)
            graph.replay()
            same = torch.equal(captured, eager())
        except Exception as exc:  # noqa: BLE001 - the row reports why capture failed
            row["result"] = f"eager step {1e3 * eager_s:.2f} ms; capture failed: {type(exc).__name__}: {exc}"[:300]
            return row
    row["result"] = (
        f"eager {1e3 * eager_s:.2f} ms, graph {1e3 * graph_s:.2f} ms ({eager_s / graph_s:.2f}x); "
        f"logits {'equal' if same else 'DIFFER'}"
    )
    return row


# ------------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    device = torch.device("cpu" if args.dry_run else "cuda")
    started = time.perf_counter()
    rows: list[dict] = []

    def out_of_time() -> bool:
        return time.perf_counter() - started > args.budget_s

    for name in args.models:
        lm32 = build_lm(name, device, args.dry_run)
        short = max(8, round(args.seconds[0] * FRAME_RATE))
        rows.append({"model": name, **check_identity(lm32, short)})
        halves = {p: at_precision(lm32, p) for p in ("float16", "bfloat16")}
        for lm_half in halves.values():
            rows.append({"model": name, **check_drift(lm32, lm_half, short)})
        engines = {"float32": lm32, "float16": halves["float16"]}
        for seconds in args.seconds:
            frames = round(seconds * FRAME_RATE)
            for batch in args.batches:
                reference = None
                for config in ("transformers", *engines):
                    row = {"model": name, "check": f"{seconds:g} s of audio, batch {batch}", "config": config}
                    label = "transformers generate (float32)" if config == "transformers" else f"engine {config}"
                    row["config"] = label
                    if out_of_time():
                        row["result"] = "skipped: past the time budget (--budget-s)"
                        rows.append(row)
                        continue
                    if config == "transformers":
                        took = time_transformers(lm32, frames, batch)
                        reference = took
                    else:
                        took = time_engine(engines[config], frames, batch)
                    row["seconds"] = took
                    row["result"] = f"{took:.2f} s" + (
                        f" ({reference / took:.2f}x transformers)" if reference and config != "transformers" else ""
                    )
                    rows.append(row)
        rows.append({"model": name, **check_cuda_graph(halves["float16"], repeats=20 if not args.dry_run else 3)})
        del lm32, halves, engines
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rows.append(
        {
            "model": "all",
            "check": "wall time of this check",
            "config": "",
            "result": f"{time.perf_counter() - started:.0f} s",
        }
    )
    return rows


def header(dry_run: bool) -> str:
    import torch
    import transformers

    if dry_run:
        gpu = "dry run on the CPU (tiny shapes: the figures are not GPU figures)"
    else:
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return (
        f"GPU check: {gpu}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {sys.version.split()[0]}"
    )


def table(rows: list[dict]) -> str:
    lines = ["| model | check | configuration | result |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['check']} | {r['config']} | {r['result']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny shapes")
    parser.add_argument("--models", nargs="+", default=["musicgen-small", "musicgen-medium"])
    parser.add_argument("--seconds", nargs="+", type=float, default=None, help="audio lengths (default 5 30)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip the timings left after this long")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = [0.2, 0.4] if args.dry_run else [5.0, 30.0]
    problems = missing_packages()
    if problems:
        print("bench/gpu_check.py cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees none; "
            "run on a GPU machine, or --dry-run to try the steps on the CPU",
            file=sys.stderr,
        )
        return 2
    print(header(args.dry_run), flush=True)
    rows = run(args)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
