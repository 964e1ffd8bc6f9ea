"""Concurrent requests against the real server (spec §7, issue 7).

On a random-weight MusicGen of the real shape (musicgen-small unless --model says otherwise),
installed in a hub-layout folder, it times in one run: one 5 s request alone; 10 concurrent 5 s
requests with batching (max_batch 10); the same 10 with batching off (max_batch 1). It records the
server's peak memory and /health latency (p50/p99, polled every 50 ms) while each load runs.

    .venv/bin/python bench/concurrency.py [--hub /tmp/audiocraft-bench-hub] [--requests 10] [--duration 5]
        [--model musicgen-medium] [--batching-only] [--against DIR]

--against DIR also times, in the same run and just before this tree, the server of another source
tree (e.g. `git archive main | tar -x -C /tmp/base`): a before/after under the same load. The header
names the CPU; each row gives the load average before and after it (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

from server_process import ServerProcess  # noqa: E402


def install_real_shape(hub: Path, name: str) -> None:
    from bench.common import build_real_shape
    from lib.catalogue import get_spec
    from server.hub import store
    from server.tiny.tokenizer import build_tokenizer
    from server.tiny.weight_norm import legacy_weight_norm_names
    from server.tiny.write import write_snapshot

    spec = get_spec(name)
    if store.is_installed(spec, hub):
        return

    def save(out: Path) -> None:
        build_real_shape(name).save_pretrained(out)
        legacy_weight_norm_names(out / "model.safetensors")
        build_tokenizer().save_pretrained(out)

    print(f"writing a real-shape random-weight {name} into {hub} ...", flush=True)
    write_snapshot(spec, hub, save)


class HealthProbe:
    """Polls /health every 50 ms in a thread; latencies in ms."""

    def __init__(self, base: str):
        import httpx

        self.client = httpx.Client(base_url=base, timeout=10)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self.client.get("/health").raise_for_status()
            self.samples.append((time.perf_counter() - started) * 1000)
            self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def percentiles(self) -> tuple[float, float]:
        ordered = sorted(self.samples)
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def peak_rss_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def run_load(base: str, n: int, duration_s: float, model: str) -> tuple[float, list[int]]:
    import httpx

    def one(i: int) -> int:
        body = {"prompt": f"request {i}: upbeat electronic music", "duration": duration_s, "seed": i, "model": model}
        return httpx.post(f"{base}/api/generate/music", json=body, timeout=3600).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    return time.perf_counter() - started, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", type=Path, default=Path("/tmp/audiocraft-bench-hub"))
    parser.add_argument("--data", type=Path, default=Path("/tmp/audiocraft-bench-data"))
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--model", default="musicgen-small", help="a MusicGen catalogue name (real shape)")
    parser.add_argument("--batching-only", action="store_true", help="skip the run with batching off")
    parser.add_argument("--against", type=Path, help="another source tree to time first, batching on")
    args = parser.parse_args()
    install_real_shape(args.hub, args.model)
    from server.engine import cpu

    this = ("this tree", ROOT)
    modes = [("batching on", args.requests, this)] + ([] if args.batching_only else [("batching off", 1, this)])
    if args.against:
        modes.insert(0, ("batching on", args.requests, (str(args.against), args.against.resolve())))
    rows = []
    for label, max_batch, (tree, root) in modes:
        load_before = os.getloadavg()[0]
        data = args.data / f"{label.replace(' ', '-')}-{len(rows)}"
        server = ServerProcess(args.hub, data, root=root, max_batch=max_batch, queue_depth=max(64, args.requests))
        server.start()
        try:
            run_load(server.base, 1, 1.0, args.model)  # load the model and warm up
            with HealthProbe(server.base) as probe_one:
                single_s, codes_one = run_load(server.base, 1, args.duration, args.model)
            with HealthProbe(server.base) as probe:
                total_s, codes = run_load(server.base, args.requests, args.duration, args.model)
            p50, p99 = probe.percentiles()
            rows.append(
                {
                    "mode": label,
                    "tree": tree,
                    "load": (load_before, os.getloadavg()[0]),
                    "single_s": single_s,
                    "total_s": total_s,
                    "ratio": total_s / single_s,
                    "ok": sum(c == 200 for c in codes + codes_one),
                    "peak_gb": peak_rss_gb(server.proc.pid),
                    "health_p50_ms": p50,
                    "health_p99_ms": p99,
                    "health_samples": len(probe.samples) + len(probe_one.samples),
                }
            )
        finally:
            server.terminate()

    n = args.requests
    print(f"\n# {cpu.label()}, {os.cpu_count()} cpus")
    print(f"{n} concurrent {args.duration:g} s requests, real-shape {args.model}, default precision\n")
    print(
        f"| tree | mode | one request (s) | {n} concurrent (s) | ratio | succeeded | server peak RSS (GB) "
        "| /health p50 (ms) | /health p99 (ms) | load average (before → after) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tree']} | {r['mode']} | {r['single_s']:.1f} | {r['total_s']:.1f} | {r['ratio']:.2f}x "
            f"| {r['ok']}/{n + 1} | {r['peak_gb']:.2f} | {r['health_p50_ms']:.1f} | {r['health_p99_ms']:.1f} "
            f"| {r['load'][0]:.1f} → {r['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
