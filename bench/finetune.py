"""Fine-tuning cost on a real-shape musicgen-small (random weights, bench/common.py): seconds per
LoRA training step and the process's peak RSS, at batch 1 and 4, LoRA rank 8 and 16.

Each configuration runs in a fresh process (peak RSS is a per-process high-water mark) through the
service's own trainer (server/finetune/train.py: delay pattern, masked cross-entropy, cfg dropout,
AdamW, gradient clipping), on random codes of `--frames` frames per window (1500 = the 30 s window
MusicGen trains on). The first `--warmup` steps are not timed (allocation, thread start).

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.finetune [--frames 1500] [--steps 3] [--warmup 1]
        [--batches 1 4] [--ranks 8 16] [--threads 2] [--precisions float32 bfloat16]

`--precisions` is the job's autocast (lib/finetune.py FinetuneRequest.precision): bfloat16 on a CPU
with AMX or AVX512-BF16 is where CPU autocast can pay; elsewhere it is emulated and slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one(batch: int, rank: int, frames: int, steps: int, warmup: int, threads: int, precision: str) -> dict:
    """Runs in the child: build, train `warmup + steps` steps, report."""
    import torch

    torch.set_num_threads(threads)
    from bench.common import build_real_shape, peak_rss_mb
    from lib.finetune import FinetuneJob
    from server.finetune.train import Trainer
    from server.tiny.tokenizer import build_tokenizer

    model = build_real_shape("musicgen-small")
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 2048, (4, frames), generator=g) for _ in range(max(4, batch))]
    captions = ["lofi hip hop with warm keys"] * len(codes)
    total = warmup + steps
    job = FinetuneJob(
        base_model="musicgen-small", dataset="bench", name="bench", rank=rank, alpha=2 * rank,
        steps=total, total_steps=total, batch_size=batch, checkpoint_every=100_000, precision=precision,
    )  # fmt: skip
    trainer = Trainer(model, build_tokenizer(), codes, captions, job)
    trainable = sum(p.numel() for p in trainer.params)
    times = []
    for step in range(total):
        started = time.perf_counter()
        trainer.step(step)
        times.append(time.perf_counter() - started)
    timed = times[warmup:]
    return {
        "batch": batch,
        "rank": rank,
        "frames": frames,
        "precision": precision,
        "s_per_step": sum(timed) / len(timed),
        "steps_timed": len(timed),
        "peak_rss_mb": peak_rss_mb(),
        "trainable_params": trainable,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        batch, rank, precision = args.child.split(",")
        print(json.dumps(one(int(batch), int(rank), args.frames, args.steps, args.warmup, args.threads, precision)))
        return
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.1f}")
    print("| batch | rank | frames | autocast | s / step | peak RSS | trainable params |")
    print("|---|---|---|---|---|---|---|")
    for precision in args.precisions:
        for batch in args.batches:
            for rank in args.ranks:
                sizes = ["--frames", str(args.frames), "--steps", str(args.steps), "--warmup", str(args.warmup)]
                cmd = [sys.executable, "-m", "bench.finetune", "--child", f"{batch},{rank},{precision}", *sizes]
                cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(
                    f"| {batch} | {rank} | {r['frames']} | {precision} | {r['s_per_step']:.1f} s "
                    f"| {r['peak_rss_mb'] / 1024:.2f} GB | {r['trainable_params'] / 1e6:.2f} M |",
                    flush=True,
                )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
