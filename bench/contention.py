"""Generation beside a CPU hog: the time for 5 s of audio alone and with another busy process.

    .venv/bin/python bench/contention.py                                   # int8-dynamic, the service's setup
    .venv/bin/python bench/contention.py --waits service,gomp-default,passive,spin=3000 --rounds 2
    .venv/bin/python bench/contention.py --precisions int8-dynamic,float32

The bar (docs/benchmarks.md): with a hog on one of the two cores the same request takes at most
about twice its time alone. The hog is one process spinning in a loop (as `stress-ng --cpu 1`), started
before and stopped after each loaded run. Each run is bench/generate.py's engine configuration in a
fresh process (real-shape random-weight musicgen-small, the service's default sampling), under one of
these OpenMP set-ups:
- service: what `resource-audiocraft serve` runs: OMP_NUM_THREADS from the usable cores, and the
  decode loop's StepThreads choosing its thread count from step times (server/engine/threads.py);
- gomp-default: the same threads, fixed (no StepThreads), libgomp's own wait (spin, then sleep);
- passive: OMP_WAIT_POLICY=PASSIVE (sleep at once);
- spin=N: GOMP_SPINCOUNT=N;
- threads=N: N torch threads, fixed.
All but `service` keep their thread count fixed.
Rounds alternate; each cell keeps its fastest round.

    .venv/bin/python bench/contention.py --served        # the real server: lazy load against explicit load

--served runs the server process (`python -m server`, with the set-up `serve` gives it) on a
real-shape random-weight musicgen-small in a hub folder under /tmp, and times a 5 s request after the
model was loaded either by the worker thread on the first request (lazy) or by
POST /api/models/{name}/load (explicit), alone and beside the hog.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_OMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_env(wait: str) -> tuple[dict[str, str], int]:
    """(the child's environment, torch threads) for one OpenMP set-up."""
    from server.engine import threads

    env = {k: v for k, v in os.environ.items() if k not in _OMP_VARS}
    count = threads.usable_cpus()
    if wait == "service":
        threads.prepare_environment(0, env)
    elif wait.startswith("threads="):
        count = int(wait.partition("=")[2])
        threads.prepare_environment(count, env)
    else:
        env["OMP_NUM_THREADS"] = str(count)
        if wait == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        elif wait.startswith("spin="):
            env["GOMP_SPINCOUNT"] = wait.partition("=")[2]
        elif wait != "gomp-default":
            raise SystemExit(f"unknown wait set-up {wait!r}")
    return env, count


def start_hog() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def served(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "test"))
    import httpx
    from server_process import ServerProcess

    from bench.concurrency import install_real_shape

    hub, name = Path("/tmp/audiocraft-bench-hub"), "musicgen-small"
    install_real_shape(hub, name)

    def generate(base: str, duration_s: float) -> float:
        body = {"prompt": "upbeat electronic music", "duration": duration_s, "seed": 1, "model": name}
        r = httpx.post(f"{base}/api/generate/music", json=body, timeout=3600)
        r.raise_for_status()
        return float(r.headers["x-generation-time"]) if "x-generation-time" in r.headers else float("nan")

    rows = []
    for rnd in range(args.rounds):
        for how in ("lazy", "explicit"):
            for loaded in (False, True):
                data = Path(f"/tmp/audiocraft-bench-contention/{how}-{int(loaded)}-{rnd}")
                hog = start_hog() if loaded else None
                server = ServerProcess(hub, data, env={v: None for v in _OMP_VARS}).start()
                try:
                    if how == "explicit":
                        httpx.post(f"{server.base}/api/models/{name}/load", timeout=3600).raise_for_status()
                    generate(server.base, 1.0)  # lazy: this request loads the model in the worker thread
                    started = time.perf_counter()
                    generate(server.base, args.seconds)
                    rows.append((how, loaded, time.perf_counter() - started))
                finally:
                    server.terminate()
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                where = "beside the hog" if loaded else "alone"
                print(f"round {rnd + 1}: {how:8s} {where:15s} {rows[-1][2]:7.2f} s", flush=True)
    print()
    print(f"| model loaded | alone, s per {args.seconds:g} s | beside a hog, s | beside / alone |")
    print("|---|---|---|---|")
    for how in ("lazy", "explicit"):
        alone = min(t for h, lo, t in rows if h == how and not lo)
        hogged = min(t for h, lo, t in rows if h == how and lo)
        print(f"| {how} | {alone:.2f} | {hogged:.2f} | {hogged / alone:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    from bench import generate
    from server.engine import cpu

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--precisions", default="int8-dynamic")
    parser.add_argument("--waits", default="service,gomp-default,threads=1")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per child, after one warm-up")
    parser.add_argument("--served", action="store_true", help="the real server: lazy against explicit load")
    args = parser.parse_args(argv)
    print(f"# {cpu.label()}, {os.cpu_count()} cpus, {args.seconds:g} s of audio, musicgen-{args.model}", flush=True)
    if args.served:
        served(args)
        return 0

    best: dict[tuple[str, str, bool], float] = {}
    for rnd in range(args.rounds):
        for precision in args.precisions.split(","):
            for wait in args.waits.split(","):
                env, count = wait_env(wait)
                run_args = argparse.Namespace(
                    device="cpu",
                    seconds=args.seconds,
                    repeats=args.repeats,
                    threads=count,
                    fixed_threads=wait != "service",
                )
                for loaded in (False, True):
                    hog = start_hog() if loaded else None
                    try:
                        r = generate.child(run_args, args.model, precision, env=env)
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    key = (precision, wait, loaded)
                    best[key] = min(best.get(key, float("inf")), r["total_s"])
                    where = "beside the hog" if loaded else "alone"
                    print(
                        f"round {rnd + 1}: {precision:13s} {wait:13s} {where:15s} {r['total_s']:7.2f} s "
                        f"(load average {r['load'][0]:.1f} -> {r['load'][1]:.1f})",
                        flush=True,
                    )
    print()
    print(f"| precision | OpenMP set-up | alone, s per {args.seconds:g} s | beside a hog, s | beside / alone |")
    print("|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        for wait in args.waits.split(","):
            alone, loaded = best[(precision, wait, False)], best[(precision, wait, True)]
            print(f"| {precision} | {wait} | {alone:.2f} | {loaded:.2f} | {loaded / alone:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
