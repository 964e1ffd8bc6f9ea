"""Model load time from disk (spec §7: under 60 s for the largest).

Random-weight MusicGen small, medium and large of the real shapes (bench/common.py) are written
once, in the hub-cache layout, into a folder outside the repository (default
/tmp/audiocraft-bench-load; large is ~13 GB of fp32 safetensors). The checkpoint is streamed to disk
one tensor at a time, so writing it never holds the model in memory.

Each load runs in a fresh process through the service's own path (ModelRegistry.get: safetensors
-> transformers model -> the engine's packed decoder at the chosen precision), and reports its
wall time and the process's peak RSS:
- cold-ish: the checkpoint's pages are first dropped from the page cache (posix_fadvise DONTNEED),
  so the weights come from the disk;
- warm: the same load again at once, the weights in the page cache.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.load [--hub DIR] [--models musicgen-small ...]
        [--dtypes auto float32]
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
_LEGACY_NAMES = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}


def _stream_safetensors(model, path: Path, seed: int) -> int:
    """Write random N(0, 0.02) values for every tensor of a meta-device model as one safetensors
    file, a tensor at a time (server/models/tensorfile.py); returns its size."""
    import torch

    from server.models import tensorfile

    tensors, seen = [], set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:  # tied weights are stored once, as save_pretrained does
            continue
        seen.add(id(t))
        for old, new in _LEGACY_NAMES.items():  # the released checkpoints' weight-norm names
            if name.endswith(old):
                name = name[: -len(old)] + new
        tensors.append((name, t))
    gen = torch.Generator().manual_seed(seed)

    def values(_name: str, t):
        if t.dtype.is_floating_point:
            return torch.randn(t.shape, generator=gen, dtype=torch.float32).mul_(0.02).to(t.dtype)
        return torch.zeros(t.shape, dtype=t.dtype)

    with open(path, "wb") as f:
        tensorfile.write(f, tensors, {"format": "pt"}, values=values)
    return path.stat().st_size


def install(name: str, hub: Path) -> None:
    """A real-shape random-weight checkpoint of `name` in hub, unless one is there."""
    import torch
    from transformers import GenerationConfig, MusicgenForConditionalGeneration

    from bench.common import real_shape_config
    from lib.catalogue import get_spec
    from server.hub import store
    from server.tiny.dims import TINY
    from server.tiny.tokenizer import build_tokenizer
    from server.tiny.write import write_snapshot

    spec = get_spec(name)
    if store.is_installed(spec, hub):
        return

    def save(out: Path) -> None:
        config = real_shape_config(name)
        with torch.device("meta"):
            model = MusicgenForConditionalGeneration(config)
        config.save_pretrained(out)
        GenerationConfig(**TINY["generation"]).save_pretrained(out)
        build_tokenizer().save_pretrained(out)
        size = _stream_safetensors(model, out / "model.safetensors", seed=0)
        print(f"  {name}: {size / 1e9:.2f} GB of weights", file=sys.stderr, flush=True)

    print(f"writing a real-shape random-weight {name} into {hub} ...", file=sys.stderr, flush=True)
    write_snapshot(spec, hub, save)


def drop_page_cache(name: str, hub: Path) -> None:
    """Evict the checkpoint's files from the page cache (no root needed)."""
    from lib.catalogue import get_spec
    from server.hub import store

    for path in (store.repo_folder(get_spec(name).repo, hub) / "blobs").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(name: str, dtype: str, hub: Path) -> dict:
    """In a fresh process: one load through the registry."""
    import torch

    from lib.settings import Settings
    from server.models.registry import ModelRegistry

    registry = ModelRegistry(Settings(models_dir=hub, device="cpu", dtype=dtype, memory_budget_gb=1000))
    started = time.perf_counter()
    lm = registry.get(name)
    took = time.perf_counter() - started
    # Weights the load left memory-mapped (file-backed) are read at first use: touch a value per
    # 4 KiB page of every tensor, so "ready" includes reading the whole checkpoint.
    with torch.no_grad():
        tensors = [p for p in lm.model.parameters() if not p.is_meta] + (lm.fast.tensors() if lm.fast else [])
        for t in (t for t in tensors if t is not None):
            t.detach().reshape(-1)[:: max(1, 4096 // t.element_size())].float().sum()
    ready = time.perf_counter() - started
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {
        "model": name,
        "dtype": lm.precision,
        "load_s": round(took, 2),
        "ready_s": round(ready, 2),
        "peak_rss_gb": round(peak_kb / 1024**2, 2),
        "held_gb": round(lm.memory_bytes() / 1e9, 2),
    }


def measure(name: str, dtype: str, hub: Path, cold: bool) -> dict:
    if cold:
        drop_page_cache(name, hub)
    cmd = [sys.executable, "-m", "bench.load", "--child", name, "--dtypes", dtype, "--hub", str(hub)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{name} {dtype} failed:\n{done.stderr[-3000:]}")
    row = {**json.loads(done.stdout.strip().splitlines()[-1]), "cache": "cold" if cold else "warm"}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | precision | page cache | load (s) | load + every weight read (s) | peak RSS (GB) | held (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['cache']} | {r['load_s']:.1f} | {r['ready_s']:.1f} "
            f"| {r['peak_rss_gb']:.2f} | {r['held_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", type=Path, default=Path("/tmp/audiocraft-bench-load"))
    parser.add_argument("--models", nargs="+", default=["musicgen-small", "musicgen-medium", "musicgen-large"])
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtypes[0], args.hub)))
        return
    for name in args.models:
        install(name, args.hub)
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            rows.append(measure(name, dtype, args.hub, cold=True))
            rows.append(measure(name, dtype, args.hub, cold=False))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    print(markdown(rows))


if __name__ == "__main__":
    main()
