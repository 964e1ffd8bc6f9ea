"""EnCodec decoding of long-form output: one codec pass over the whole timeline vs the engine's
30 s pieces with 1 s of context (server/engine/decode.py codes_to_audio).

The 32 kHz EnCodec of the real shape (random weights: same compute and memory) decodes random
codes of each duration, in a fresh process per measurement; reported: wall time, peak RSS and how
far the pieces are from the one pass.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.longform_decode [--seconds 30 120 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def _measure(seconds: float, mode: str) -> dict:
    import torch
    from transformers import EncodecModel

    from bench.common import peak_rss_mb, real_shape_config
    from server.engine import decode

    config = real_shape_config("musicgen-small").audio_encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = EncodecModel(config).eval()
    lm = SimpleNamespace(
        model=SimpleNamespace(audio_encoder=codec), sample_rate=32000, frame_rate_hz=50.0,
        device=torch.device("cpu"), stereo=False,
    )  # fmt: skip
    n = round(seconds * 50)
    codes = torch.randint(0, 2048, (4, n), generator=torch.Generator().manual_seed(1))
    before = peak_rss_mb()
    started = time.perf_counter()
    with torch.inference_mode():
        audio = decode.decode_piece(lm, codes, 0, n) if mode == "one-pass" else decode.codes_to_audio(lm, codes)
    took = time.perf_counter() - started
    out = {"seconds": seconds, "mode": mode, "decode_s": round(took, 1), "peak_rss_mb": round(peak_rss_mb())}
    out["rss_growth_mb"] = round(out["peak_rss_mb"] - before)
    torch.save(audio, f"/tmp/audiocraft-bench-decode-{seconds:g}-{mode}.pt")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0, 300.0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(float(args.child[0]), args.child[1])))
        return
    import torch

    for seconds in args.seconds:
        rows = []
        for mode in ("one-pass", "pieces"):
            cmd = [sys.executable, "-m", "bench.longform_decode", "--child", str(seconds), mode]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        a, b = (torch.load(f"/tmp/audiocraft-bench-decode-{seconds:g}-{m}.pt") for m in ("one-pass", "pieces"))
        rows[1]["max_abs_diff"] = float((a - b).abs().max())
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
