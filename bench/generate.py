"""Generation speed: transformers' generate() against this engine at each precision, in one run.

    .venv/bin/python bench/generate.py                      # musicgen-small (+ medium if memory allows)
    .venv/bin/python bench/generate.py --models small --rounds 2
    .venv/bin/python bench/generate.py --device cuda        # the same on a GPU (float32/float16/bfloat16)
    .venv/bin/python bench/generate.py --precisions int8,int8@4,int8-dynamic@4   # batching: 4 requests at once
    .venv/bin/python bench/generate.py --precisions float32/aten,float32   # a dense kernel against the CPU's choice

Each configuration runs in a subprocess of its own (so its peak RSS is its own), on a random-weight
model of the real shape built from the same seed (the compute is the real one; nothing is
downloaded), with the same prompt and the service's default sampling (top_k 250, temperature 1,
guidance 3). A timed run is one request for `--seconds` of audio, end to end: tokenizer and T5,
every LM step, and EnCodec decoding to a waveform. transformers is timed with
`MusicgenForConditionalGeneration.generate`, which does the same end to end. Rounds alternate the
configurations, so load from other processes on the machine falls on all of them alike; the table
keeps each configuration's fastest round and the ratios are to transformers' fastest round.

**How close to the memory floor.** A decode step at batch 1 is bound by reading the weights, so each
round also measures the machine's streaming bandwidth (`bandwidth`: a 1 GiB tensor copy, bytes read
plus bytes written per second, the best of several), and each engine row reports the bytes a step
reads (weights, plus the self-attention cache filled so far, on average) and the share of that
bandwidth its steps use: bytes per step x steps/s / bandwidth. The header names the CPU and the
kernel each precision takes on it (server/engine/dense.py, server/engine/qdynamic.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "upbeat electronic music with a groovy bassline and punchy drums, 120 bpm"
FRAME_RATE = 50


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# precision/mode for the engine's own kernels (server/engine/native): (kernels on, whole step in one call,
# their own int8 matmul). The default is all on; these take them away one at a time, to measure what
# each pays (fbgemm: session 9's engine, the whole step on fbgemm's int8 matmul).
NATIVE_MODES = {"torch-ops": (False, False, False), "python-step": (True, False, True), "fbgemm": (True, True, False)}

# ------------------------------------------------------------------------------------------------
# One configuration (runs in a child process)


def stream_bandwidth(size_bytes: int = 2**30, repeats: int = 6) -> float:
    """The best rate of a large tensor copy, in bytes moved (read + written) per second."""
    import torch

    src = torch.ones(size_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * size_bytes / best


def run_config(args: argparse.Namespace) -> dict:
    import torch

    if args.config == "bandwidth":
        if args.threads:
            torch.set_num_threads(args.threads)
        from server.engine import cpu, native

        native.kernels()  # loads them (or says why not), as a model load does
        engine = native.status()
        kernels = cpu.report()["kernels"] | {"engine": f"{engine['kernels']} {engine.get('level') or engine['reason']}"}
        return {"config": "bandwidth", "bytes_per_s": stream_bandwidth(), "kernels": kernels}

    from bench.common import build_real_shape
    from lib.catalogue import get_spec
    from server.engine.decode import DecodeBatch, DecodeRequest, codes_to_audio
    from server.models.device import pick_precision
    from server.models.musicgen import prepare
    from server.tiny.tokenizer import build_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fixed_threads:
        from server.engine import threads

        threads.ADAPTIVE = False
    device = torch.device(args.device)
    name = f"musicgen-{args.model}"
    n_frames = round(args.seconds * FRAME_RATE)
    steps = n_frames + 3
    t0 = time.perf_counter()
    model = build_real_shape(name, seed=0)
    tokenizer = build_tokenizer()
    result: dict = {"model": name, "config": args.config, "device": device.type, "steps": steps}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.config == "transformers":
        model.to(device)
        codec = model.audio_encoder
        original = codec.decode
        codec_time = [0.0]

        def timed_decode(*a, **kw):
            sync()
            started = time.perf_counter()
            out = original(*a, **kw)
            sync()
            codec_time[0] += time.perf_counter() - started
            return out

        codec.decode = timed_decode

        def once(seed: int, frames: int = n_frames) -> tuple[float, float]:
            torch.manual_seed(seed)
            codec_time[0] = 0.0
            inputs = tokenizer([PROMPT], return_tensors="pt").to(device)
            sync()
            started = time.perf_counter()
            with torch.inference_mode():
                audio = model.generate(
                    **inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=frames + 3
                )
            sync()
            total = time.perf_counter() - started
            assert audio.shape[-1] == frames * 640, audio.shape
            return total, total - codec_time[0]
    else:
        precision, _, batch_size = args.config.partition("@")
        precision, _, kernel = precision.partition("/")
        native_mode = NATIVE_MODES.get(kernel)
        if kernel and native_mode is None:  # precision/kernel: every dense weight takes it (server/engine/dense.py)
            from server.engine import dense

            if kernel not in dense.KERNELS:
                raise SystemExit(f"unknown kernel {kernel!r}; choose one of {', '.join(dense.KERNELS)}")
            dense.forced = kernel
        n_requests = int(batch_size or 1)
        result["requests"] = n_requests
        lm = prepare(model, get_spec(name), tokenizer, device, pick_precision(precision, device), Path("/dev/null"))
        del model
        if native_mode is not None:  # the engine's own kernels off, or the Python step over them
            lm.fast_lm().use_native(*native_mode)

        def once(seed: int, frames: int = n_frames) -> tuple[float, float]:
            sync()
            started = time.perf_counter()
            batch = DecodeBatch(lm)
            handles = [batch.add(DecodeRequest(PROMPT, frames, seed=seed + i)) for i in range(n_requests)]
            sync()
            loop_started = time.perf_counter()
            while len(batch):
                batch.step()
            sync()
            loop = time.perf_counter() - loop_started
            for handle in handles:
                audio = codes_to_audio(lm, batch.pop(handle))
                assert audio.shape[-1] == frames * 640, audio.shape
            sync()
            return time.perf_counter() - started, loop

        result["weight_mb_per_step"] = lm.fast.weight_bytes() / 2**20
        # Every request of the batch reads its own cache; the weights are read once.
        rows = 2 * n_requests
        result["read_mb_per_step"] = (lm.fast.step_bytes(rows, steps)) / 2**20

    result["build_s"] = time.perf_counter() - t0
    result["rss_loaded_mb"] = _status_kb("VmRSS") / 1024
    once(1000, frames=8)  # warm-up: first-call allocations, oneDNN kernel selection
    peak_reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [once(seed) for seed in range(args.repeats)]
    total, loop = min(runs)
    result.update(
        total_s=total,
        loop_s=loop,
        steps_per_s=steps / loop,
        peak_rss_mb=_status_kb("VmHWM") / 1024 if peak_reset else None,
        peak_rss_process_mb=_status_kb("VmHWM") / 1024,
    )
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# ------------------------------------------------------------------------------------------------
# The driver


def default_precisions(device: str) -> list[str]:
    return ["float32", "float16", "bfloat16"] if device == "cuda" else ["int8-dynamic", "bfloat16", "float32"]


def medium_fits() -> bool:
    """musicgen-medium's transformers run needs ~8 GB (fp32 weights, cache, T5, EnCodec)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) > 14 * 2**20
    except OSError:
        pass
    return False


def child(args: argparse.Namespace, model: str, config: str, env: dict[str, str] | None = None) -> dict:
    """One configuration in a fresh process. env: the child's environment (default: this one, with
    the OpenMP settings the service itself starts with, server/engine/threads.py)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model",
        model,
        "--config",
        config,
        "--device",
        args.device,
        "--seconds",
        str(args.seconds),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ] + (["--fixed-threads"] if getattr(args, "fixed_threads", False) else [])
    if env is None:
        from server.engine import threads

        env = dict(os.environ)
        threads.prepare_environment(args.threads, env)
    env = dict(env, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{model}/{config} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The 1-minute load average around the run: above the core count, other processes were
    # competing for the cores and every figure of this run is slower than the machine can do.
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def table(rows: list[dict], seconds: float, bandwidth: float | None = None) -> str:
    """bandwidth: the machine's streaming rate (bytes/s) measured in the same run, or None."""
    lines = [
        f"| model | configuration | steps/s (LM loop) | s per {seconds:g} s of audio | vs transformers "
        "| weights read per step | bytes read per step | of bandwidth | RSS loaded | peak RSS while generating |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r["total_s"] for r in rows if r["config"] == "transformers"}
    for r in rows:
        ratio = base.get(r["model"], float("nan")) / r["total_s"]
        weights = f"{r['weight_mb_per_step']:.0f} MB" if "weight_mb_per_step" in r else "-"
        read = f"{r['read_mb_per_step']:.0f} MB" if "read_mb_per_step" in r else "-"
        share = "-"
        if bandwidth and "read_mb_per_step" in r:
            share = f"{r['read_mb_per_step'] * 2**20 * r['steps_per_s'] / bandwidth:.0%}"
        peak = r.get("peak_cuda_mb") or r.get("peak_rss_mb") or r["peak_rss_process_mb"]
        if r["config"] == "transformers":
            label = "transformers generate (fp32)"
        elif r.get("requests", 1) > 1:
            label = f"engine, {r['config'].partition('@')[0]}, {r['requests']} requests in one batch (time for all)"
        else:
            label = f"engine, {r['config']}"
        lines.append(
            f"| {r['model']} | {label} | {r['steps_per_s']:.1f} | {r['total_s']:.2f} | {ratio:.2f}x "
            f"| {weights} | {read} | {share} | {r['rss_loaded_mb']:.0f} MB | {peak:.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="auto", help="small,medium,large or auto (small, medium if it fits)")
    parser.add_argument(
        "--precisions",
        default=None,
        help="engine precisions (default: all for the device); precision@N runs N requests in one batch; "
        "precision/kernel forces a dense kernel (aten, column-split, onednn-packed); int8-dynamic/torch-ops "
        "runs without the engine's C++ kernels, int8-dynamic/python-step with them under the Python step, "
        "int8-dynamic/fbgemm with the whole step on fbgemm's int8 matmul",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest is kept")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per child, after one warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--fixed-threads", action="store_true", help="keep the thread count (no StepThreads choice in the loop)"
    )
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_config(args)))
        return 0

    models = args.models.split(",") if args.models != "auto" else ["small"] + (["medium"] if medium_fits() else [])
    precisions = args.precisions.split(",") if args.precisions else default_precisions(args.device)
    configs = ([] if args.no_transformers else ["transformers"]) + precisions
    from server.engine import cpu

    print(f"# {args.device}, {cpu.label()}, {os.cpu_count()} cpus, {args.seconds:g} s of audio, models {models}")
    best: dict[tuple[str, str], dict] = {}
    bandwidth = None
    for rnd in range(args.rounds):
        if args.device == "cpu":  # in every round: it is slowed by the same load as the round's runs
            r = child(args, models[0], "bandwidth")
            if bandwidth is None:
                print("# kernels: " + ", ".join(f"{p} {k}" for p, k in r["kernels"].items()))
            bandwidth = max(bandwidth or 0.0, r["bytes_per_s"])
            print(
                f"round {rnd + 1}: streaming bandwidth (1 GiB copy) {r['bytes_per_s'] / 1e9:.1f} GB/s  "
                f"(load average {r['load'][0]:.1f} -> {r['load'][1]:.1f})",
                flush=True,
            )
        for model in models:
            for config in configs:
                r = child(args, model, config)
                key = (r["model"], config)
                print(
                    f"round {rnd + 1}: {r['model']:16s} {config:13s} {r['total_s']:7.2f} s  "
                    f"{r['steps_per_s']:6.1f} steps/s  (load average {r['load'][0]:.1f} -> {r['load'][1]:.1f})",
                    flush=True,
                )
                if key not in best or r["total_s"] < best[key]["total_s"]:
                    best[key] = r
    rows = [best[(f"musicgen-{m}", c)] for m in models for c in configs]
    print()
    if bandwidth:
        print(f"streaming bandwidth, best round: {bandwidth / 1e9:.1f} GB/s (bytes read + written per second)")
    print(table(rows, args.seconds, bandwidth))
    if args.json:
        args.json.write_text(json.dumps({"bandwidth_bytes_per_s": bandwidth, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
