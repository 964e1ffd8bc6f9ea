"""Model load time from disk (spec §7: under 60 s for the largest; issue 20: musicgen-large at the CPU
default under 20 s cold, peak RSS while loading at most 1.5x what is held after).

Random-weight MusicGen small, medium and large of the real shapes (bench/common.py) are written
once, in the hub-cache layout, into a folder outside the repository (default
/tmp/audiocraft-bench-load; large is ~13.7 GB of fp32 safetensors). The checkpoint is streamed to
disk one tensor at a time, so writing it never holds the model in memory.

Each load runs in a fresh process through the service's own path (ModelRegistry.get), and reports
its wall time, the process's peak RSS and what the model holds after, and two phases of it:
- weights: from the start of packcache.load to the last weight in memory. From the cache, that is
  the header and structure checks and the background read of the file (server/models/streamed.py);
  otherwise the float32 checkpoint read and quantized.
- packing: the engine packing the decoder (weights.pack_decoder), including the time it waits for
  layers still being read.
From the cache the two overlap (the decoder is packed as its layers arrive), so they do not add up:
"both" is from the start of the first to the end of the later, which without the overlap is their
sum (plus the tokenizer's load between them). For a quantized precision (the CPU default,
int8-dynamic) the rows are:
- no cache: the float32 checkpoint read and quantized, the packed-decoder cache
  (server/models/packcache.py) neither read nor written: the load as it was before the cache;
- first load: the cache removed first, so the load builds it from the checkpoint and writes it;
- from the cache, cold: the page cache dropped first (posix_fadvise DONTNEED on the checkpoint and
  the cache file), so the cache file comes from the disk;
- from the cache, warm: the same at once.
float32 has no cache (the checkpoint is what it runs on): cold and warm.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.load [--hub DIR] [--models musicgen-small ...]
        [--dtypes auto float32] [--modes no-cache first cold warm]

The header names the CPU; each row carries the 1-minute load average when it started.
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
    """Evict the checkpoint's files and the packed-decoder cache from the page cache (no root needed)."""
    from lib.catalogue import get_spec
    from server.hub import store

    folder = store.repo_folder(get_spec(name).repo, hub)
    for path in [*(folder / "blobs").iterdir(), *(folder / "packed").rglob("*.safetensors")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def remove_cache(name: str, hub: Path) -> None:
    """Delete the model's packed-decoder cache (server/models/packcache.py), so the next load builds it."""
    import shutil

    from lib.catalogue import get_spec
    from server.hub import store

    shutil.rmtree(store.repo_folder(get_spec(name).repo, hub) / "packed", ignore_errors=True)


def child(name: str, dtype: str, hub: Path, use_cache: bool) -> dict:
    """In a fresh process: one load through the registry. use_cache False: the cache is neither read
    nor written (the load quantizes the float32 checkpoint, as before the cache existed)."""
    import torch

    from lib.settings import Settings
    from server.models import musicgen, packcache
    from server.models.registry import ModelRegistry

    marks: dict[str, float] = {}  # perf_counter times
    reads = []
    real_load, real_pack = packcache.load, musicgen.pack_decoder

    def load(*args, **kwargs):  # the cache read (in the background), or the fp32 load + quantizing
        marks["weights_start"] = time.perf_counter()
        model, pending = real_load(*args, **kwargs)
        marks["weights_end"] = time.perf_counter()  # the end unless a read goes on (below)
        reads.append(pending)
        return model, pending

    def pack(*args, **kwargs):  # the engine's packing (fbgemm prepack), waits for layers included
        marks["pack_start"] = time.perf_counter()
        try:
            return real_pack(*args, **kwargs)
        finally:
            marks["pack_end"] = time.perf_counter()

    if not use_cache:
        packcache.cache_path = lambda folder, form: None
    packcache.load, musicgen.pack_decoder = load, pack
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
    read_end = getattr(reads[0], "finished_at", None) if reads else None
    weights_end = read_end or marks["weights_end"]
    return {
        "model": name,
        "dtype": lm.precision,
        "load_s": round(took, 2),
        "ready_s": round(ready, 2),
        "weights_s": round(weights_end - marks["weights_start"], 2),
        "pack_s": round(marks["pack_end"] - marks["pack_start"], 2),
        "both_s": round(max(weights_end, marks["pack_end"]) - marks["weights_start"], 2),
        "peak_rss_gb": round(peak_kb / 1024**2, 2),
        "held_gb": round(lm.memory_bytes() / 1e9, 2),
    }


# How each row loads: (label, page cache dropped first, packed-decoder cache used, cache removed first).
_MODES = {
    "no-cache": ("no cache (quantized from fp32)", True, False, False),
    "first": ("first load (writes the cache)", True, True, True),
    "cold": ("from the cache", True, True, False),
    "warm": ("from the cache", False, True, False),
}
_FLOAT32_MODES = {"cold": ("checkpoint", True, True, False), "warm": ("checkpoint", False, True, False)}


def measure(name: str, dtype: str, hub: Path, mode: str) -> dict:
    label, cold, use_cache, fresh = (_FLOAT32_MODES if dtype == "float32" else _MODES)[mode]
    if fresh:
        remove_cache(name, hub)
    if cold:
        drop_page_cache(name, hub)
    cmd = [sys.executable, "-m", "bench.load", "--child", name, "--dtypes", dtype, "--hub", str(hub)]
    cmd += [] if use_cache else ["--no-cache"]
    started_load = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"{name} {dtype} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(source=label, page_cache="cold" if cold else "warm", loadavg=f"{started_load:.1f}")
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | precision | weights from | page cache | load (s) | weights (s) | packing (s) "
        "| weights and packing, start to end (s) | load + every weight read (s) | peak RSS (GB) | held (GB) "
        "| peak / held | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['source']} | {r['page_cache']} | {r['load_s']:.1f} "
            f"| {r['weights_s']:.1f} | {r['pack_s']:.1f} | {r['both_s']:.1f} | {r['ready_s']:.1f} "
            f"| {r['peak_rss_gb']:.2f} | {r['held_gb']:.2f} | {r['peak_rss_gb'] / max(r['held_gb'], 1e-9):.2f} "
            f"| {r['loadavg']} |"
        )
    return "\n".join(lines)


def cpu_header() -> str:
    """The CPU (lscpu's model name; the vector extensions the kernels choose by) and the threads."""
    import torch

    from server.engine import cpu

    return f"CPU: {cpu.label()}; {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", type=Path, default=Path("/tmp/audiocraft-bench-load"))
    parser.add_argument("--models", nargs="+", default=["musicgen-small", "musicgen-medium", "musicgen-large"])
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(_MODES),
        choices=list(_MODES),
        help="rows per quantized precision (float32 always runs cold and warm)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtypes[0], args.hub, use_cache=not args.no_cache)))
        return
    for name in args.models:
        install(name, args.hub)
    print(cpu_header(), file=sys.stderr, flush=True)
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            modes = list(_FLOAT32_MODES) if dtype == "float32" else args.modes
            rows.extend(measure(name, dtype, args.hub, mode) for mode in modes)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    print(cpu_header())
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
