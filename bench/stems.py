"""The cost of melody stems: htdemucs on a 30 s melody, as a melody request with melody_stems runs it.

A random-weight htdemucs of the released shape (server/tiny/demucs.py REAL_KWARGS: 42M parameters,
7.8 s segments) is written in its hub layout and loaded by the service's loader; then, on the same
30 s melody at 32 kHz, in the same run:
- stems: server.engine.stems.melody_stems (resample to 44.1 kHz stereo, one shifted pass of
  7.8 s segments overlapping by a quarter, vocals + other, back to 32 kHz mono): what a request pays;
- apply_model: demucs' own `apply_model(bag, wav)` (shifts=1) on the same 44.1 kHz input, the
  reference: the ratio stems / apply_model shows what the service adds to demucs' own separation;
- chroma: the chroma of the result, for scale (what melody_stems=false costs).
Random weights cost what real ones do (the same convolutions, FFTs and attention). The load average
is printed before and after: on a shared machine the figures are loaded ones, the ratio is not.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.stems [--seconds 30] [--repeat 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()

    import numpy as np
    import torch
    from demucs.apply import apply_model
    from demucs.audio import convert_audio

    from lib.catalogue import HTDEMUCS
    from server.engine.chroma import chroma
    from server.engine.stems import melody_stems
    from server.models.demucs import load_demucs
    from server.tiny import demucs as shapes

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        shapes.save_hub_files(Path(folder), shapes.build(shapes.REAL_KWARGS, seed=0), shapes.REAL_KWARGS)
        started = time.perf_counter()
        separator = load_demucs(HTDEMUCS, Path(folder), torch.device("cpu"), "float32")
        load_s = time.perf_counter() - started
    bag = separator.model
    rate = 32000
    t = np.arange(int(args.seconds * rate)) / rate
    melody = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(
        np.float32
    )
    wav = convert_audio(torch.from_numpy(melody)[None, None], rate, bag.samplerate, bag.audio_channels)
    times: dict[str, list[float]] = {"stems": [], "apply_model": [], "chroma": []}
    for i in range(args.repeat):
        started = time.perf_counter()
        mix = melody_stems(bag, melody, rate, seed=i)
        times["stems"].append(time.perf_counter() - started)
        print(f"stems {i}: {times['stems'][-1]:.1f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        random.seed(i)
        started = time.perf_counter()
        with torch.no_grad():
            apply_model(bag, wav, device="cpu")
        times["apply_model"].append(time.perf_counter() - started)
        print(f"apply_model {i}: {times['apply_model'][-1]:.1f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        chroma(mix, rate)
        times["chroma"].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "melody_s": args.seconds,
        "threads": args.threads,
        "parameters": sum(p.numel() for p in bag.parameters()),
        "load_s": round(load_s, 2),
        "best_s": {k: round(v, 2) for k, v in best.items()},
        "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "stems_over_apply_model": round(best["stems"] / best["apply_model"], 3),
        "realtime_factor": round(args.seconds / best["stems"], 2),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
