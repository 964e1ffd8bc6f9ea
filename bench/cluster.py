"""The Redis queue's cost and its scale-out (issue 17): the same load on one process and on a cluster.

On a random-weight musicgen-small of the real shape (installed in a hub-layout folder), 20 concurrent
5 s requests (POST /api/generate/music, each waiting for its audio) against:

- **single process**: `serve` (role all, the embedded SQLite queue), the reference;
- **1 worker**: redis-server, an API node (`--role api`) and one worker (`--role worker`);
- **2 workers**: the same with two workers, each with half the cores (`--torch-threads`).

It reports jobs per minute, p50 and p95 latency (submission to audio), and the overhead of the
cluster at 1 worker against the single process. Every server is warmed (the model loaded) first.

    .venv/bin/python bench/cluster.py [--hub /tmp/audiocraft-bench-hub] [--requests 20] [--duration 5]
        [--modes single,1,2]

Two workers on a 2-core machine share the same cores: they cannot run faster than one, and the
figure shows what the split costs, not what a second machine would give.

The throughput rows run one mode after another, so a machine whose load changes between them makes
their ratio unfair. `--paired N` measures the queue's overhead in a way load drift does not skew:
the single process and the 1-worker cluster are up side by side (both warm), and N rounds send one
request to each in turn (the order alternating), so each pair of latencies saw the same load. It
reports the median latency of each and the median of the per-pair ratios.

    .venv/bin/python bench/cluster.py --paired 10 [--duration 5]

On the real shape a request's compute (seconds, and noisy on a loaded machine) hides the queue's own
cost (milliseconds). `--tiny` runs the same measure on the tiny random-weight model instead, whose
compute is a few milliseconds, so what the two deployments differ by is the queue's cost itself:

    .venv/bin/python bench/cluster.py --paired 40 --tiny
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

from redis_server import RedisServer, ensure_installed  # noqa: E402
from server_process import ServerProcess  # noqa: E402

from bench.concurrency import install_real_shape  # noqa: E402


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "?").strip()
    return f"{name} (family {fields.get('CPU family', '?').strip()} model {fields.get('Model', '?').strip()})"


def run_load(base: str, n: int, duration_s: float, model: str) -> tuple[float, list[float], list[int]]:
    """(wall seconds for all, each request's latency, status codes)."""
    import httpx

    def one(i: int) -> tuple[float, int]:
        body = {"prompt": f"request {i}: upbeat electronic music", "duration": duration_s, "seed": i, "model": model}
        t0 = time.perf_counter()
        code = httpx.post(f"{base}/api/generate/music", json=body, timeout=3600).status_code
        return time.perf_counter() - t0, code

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    return time.perf_counter() - started, [r[0] for r in results], [r[1] for r in results]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def start_mode(mode: str, hub: Path, data: Path, requests: int) -> tuple[str, list]:
    """(API base URL, processes to stop) for one mode."""
    common = {"queue_depth": max(64, requests), "device": "cpu"}
    if mode == "single":
        server = ServerProcess(hub, data / "single", **common).start()
        return server.base, [server]
    workers = int(mode)
    redis = RedisServer(data / f"redis-{mode}").start()
    shared = {**common, "queue_url": redis.url(), "artifacts_dir": data / f"artifacts-{mode}"}
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs: list = [redis]
    for i in range(workers):
        worker_id = f"w{i + 1}"
        procs.append(
            ServerProcess(hub, data / f"{mode}-{worker_id}", role="worker", worker_id=worker_id,
                          torch_threads=threads, **shared).start()  # fmt: skip
        )
    api = ServerProcess(hub, data / f"{mode}-api", role="api", **shared).start()
    procs.append(api)
    return api.base, procs


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def paired(args: argparse.Namespace) -> None:
    """One request at a time to each of two warm deployments, alternating, N rounds."""
    import httpx

    single_base, single_procs = start_mode("single", args.hub, args.data, args.requests)
    procs = list(single_procs)
    try:
        cluster_base, cluster_procs = start_mode("1", args.hub, args.data, args.requests)
        procs += cluster_procs
        bases = {"single": single_base, "cluster": cluster_base}
        for base in bases.values():
            run_load(base, 1, 1.0, args.model)  # load the model
        latency: dict[str, list[float]] = {"single": [], "cluster": []}
        print(f"load average at the start: {load_average()}", flush=True)
        for i in range(args.paired):
            order = ["single", "cluster"] if i % 2 == 0 else ["cluster", "single"]
            for name in order:
                body = {"prompt": f"round {i}", "duration": args.duration, "seed": i, "model": args.model}
                t0 = time.perf_counter()
                response = httpx.post(f"{bases[name]}/api/generate/music", json=body, timeout=3600)
                response.raise_for_status()
                latency[name].append(time.perf_counter() - t0)
            last = {name: f"{values[-1]:.2f} s" for name, values in latency.items()}
            print(f"round {i}: single {last['single']}, cluster {last['cluster']}", flush=True)
        print(f"load average at the end: {load_average()}")
    finally:
        stop(procs)
    ratios = [c / s for s, c in zip(latency["single"], latency["cluster"], strict=True)]
    diffs = [c - s for s, c in zip(latency["single"], latency["cluster"], strict=True)]
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores")
    shape = "tiny" if args.tiny else "real-shape"
    print(f"{args.paired} rounds of one {args.duration:g} s request to each, {shape} {args.model}\n")
    print("| deployment | median latency (s) | min (s) | max (s) |")
    print("|---|---|---|---|")
    for name, label in (("single", "single process (SQLite)"), ("cluster", "Redis, API node + 1 worker")):
        values = latency[name]
        print(f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(f"\nper-pair ratio cluster/single: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"median difference {statistics.median(diffs) * 1000:.0f} ms")  # fmt: skip


def stop(procs: list) -> None:
    for proc in reversed(procs):
        proc.terminate() if isinstance(proc, ServerProcess) else proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", type=Path, default=Path("/tmp/audiocraft-bench-hub"))
    parser.add_argument("--data", type=Path, default=Path("/tmp/audiocraft-bench-cluster"))
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--model", default="musicgen-small")
    parser.add_argument("--modes", default="single,1,2", help="single (one process) and worker counts")
    parser.add_argument("--paired", type=int, default=0, help="rounds of the side-by-side overhead measure")
    parser.add_argument("--tiny", action="store_true", help="the tiny random-weight model (the queue's own cost)")
    args = parser.parse_args()
    # A stopped benchmark stops its servers too: SIGTERM runs the `finally` blocks that stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    why_not = ensure_installed()
    if why_not:
        raise SystemExit(why_not)
    if args.tiny:
        from server.tiny.write import write_tiny_models

        args.hub = args.hub.with_name(args.hub.name + "-tiny")
        args.data = args.data.with_name(args.data.name + "-tiny")
        write_tiny_models(args.hub, names=[args.model])
    else:
        install_real_shape(args.hub, args.model)
    if args.paired:
        paired(args)
        return

    rows = []
    for mode in args.modes.split(","):
        base, procs = start_mode(mode, args.hub, args.data, args.requests)
        try:
            warm = max(1, int(mode) if mode != "single" else 1)
            run_load(base, warm, 1.0, args.model)  # each worker loads the model
            load_before = load_average()
            total_s, latencies, codes = run_load(base, args.requests, args.duration, args.model)
            load_after = load_average()
        finally:
            stop(procs)
        rows.append(
            {
                "mode": mode,
                "total_s": total_s,
                "jobs_per_min": 60 * args.requests / total_s,
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "ok": sum(c == 200 for c in codes),
                "load": f"{load_before} -> {load_after}",
            }
        )
        print(rows[-1], flush=True)

    single = next((r for r in rows if r["mode"] == "single"), None)
    n = args.requests
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores")
    print(f"{n} concurrent {args.duration:g} s requests, real-shape {args.model}, default precision and batch\n")
    print(
        "| mode | wall (s) | jobs/min | p50 latency (s) | p95 latency (s) | succeeded | vs single process "
        "| load average |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = "single process (SQLite)" if r["mode"] == "single" else f"Redis, API node + {r['mode']} worker(s)"
        versus = f"{r['total_s'] / single['total_s']:.2f}x wall" if single and r is not single else ""
        print(
            f"| {label} | {r['total_s']:.1f} | {r['jobs_per_min']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {r['ok']}/{n} | {versus} | {r['load']} |"
        )


if __name__ == "__main__":
    main()
