"""The dense decode matmuls, kernel against kernel, on musicgen-small's weight shapes (server/engine/dense.py).

    .venv/bin/python bench/dense.py                       # float32 and bfloat16, this CPU's threads
    .venv/bin/python bench/dense.py --threads 1,2 --precisions float32,bfloat16,float16

For each weight shape of a decode step ([rows x in] by [in x out], rows: the precision's row block),
every kernel the CPU offers runs in turn, call after call (interleaved, so load from other processes
falls on all of them alike); the table keeps each kernel's fastest call and the GB/s of weight it
streamed, and says whether its bits equal F.linear's (what float32's token identity needs). The
header names the CPU and the streaming bandwidth (a 1 GiB copy, bytes read + written per second).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# musicgen-small's decode-step weights [out, in]: q/k/v fused, out and cross q/out, fc1, fc2, the heads.
SHAPES = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096), (8192, 1024)]
ROWS = {"float32": 2, "bfloat16": 8, "float16": 8}


def kernels_for(precision: str, weight, rows: int) -> dict:
    import torch
    import torch.nn.functional as F

    from server.engine import dense

    out = {dense.ATEN: lambda x: F.linear(x, weight)}
    parts = dense.split_parts(weight.shape[0])
    if parts > 1:
        blocks = weight.view(parts, weight.shape[0] // parts, weight.shape[1])
        out[f"{dense.COLUMN_SPLIT} x{parts}"] = lambda x: dense._split_matmul(x, blocks)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        out[dense.ONEDNN] = lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except RuntimeError:  # no oneDNN kernel for this dtype on this CPU
        pass
    return out


def measure(precision: str, calls: int) -> list[str]:
    import torch

    dtype = getattr(torch, precision)
    rows = ROWS[precision]
    lines = []
    for out_features, in_features in SHAPES:
        gen = torch.Generator().manual_seed(0)
        weight = (torch.randn(out_features, in_features, generator=gen) * 0.02).to(dtype)
        x = torch.randn(rows, in_features, generator=gen).to(dtype)
        kernels = kernels_for(precision, weight, rows)
        reference = kernels["aten"](x)
        best = dict.fromkeys(kernels, float("inf"))
        for fn in kernels.values():
            fn(x)
        for _ in range(calls):
            for name, fn in kernels.items():
                started = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - started)
        nbytes = weight.numel() * weight.element_size()
        for name, fn in kernels.items():
            same = torch.equal(fn(x).to(dtype), reference)
            lines.append(
                f"| {precision} | {rows} x {in_features} by {in_features} x {out_features} | {name} "
                f"| {best[name] * 1e3:.3f} | {nbytes / best[name] / 1e9:.1f} | {'yes' if same else 'no'} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--threads", default="0", help="comma-separated torch thread counts (0: the usable cores)")
    parser.add_argument("--calls", type=int, default=60, help="calls per kernel and shape (the fastest is kept)")
    args = parser.parse_args(argv)

    import torch

    from bench.generate import stream_bandwidth
    from server.engine import cpu, threads

    counts = [threads.thread_count(int(t)) for t in args.threads.split(",")]
    torch.set_num_threads(max(counts))
    bandwidth = stream_bandwidth()
    print(f"# {cpu.label()}; streaming bandwidth {bandwidth / 1e9:.1f} GB/s; load average {os.getloadavg()[0]:.1f}")
    for count in counts:
        torch.set_num_threads(count)
        print(f"\n{count} thread(s)\n")
        print("| precision | shape | kernel | fastest call (ms) | GB/s of weight | bits equal F.linear's |")
        print("|---|---|---|---|---|---|")
        for precision in args.precisions.split(","):
            print("\n".join(measure(precision, args.calls)), flush=True)
    print(f"\n# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
