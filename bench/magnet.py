"""MAGNeT against MusicGen for the same audio on this machine: real-shape magnet-small-10secs (random
weights; the decoder of musicgen-small, non-causal, T5-base, 32 kHz EnCodec) and musicgen-small, each
making 10 s of audio through the engine (server/engine/magnet.py, server/engine/decode.py).

MAGNeT's cost is its iterations (audiocraft's default schedule: 20 + 10 + 10 + 10 = 50), each a
forward of the whole sequence (498 frames, two rows for guidance); MusicGen's is its 503 one-frame
steps. Both are timed on their own, in a fresh process each, at each precision asked.

--iterations N (default) times N of MAGNeT's iterations (half at codebook 0, half with the banded
mask of the later codebooks: the two kinds of iteration) and N * 10 of MusicGen's steps, and scales
both to the whole generation: every MAGNeT iteration has the same shapes, and a MusicGen step's cost
barely grows with its position at this length. --full runs both generations whole (the figure to
quote; minutes on a quiet machine). The 1-minute load average is recorded around each run: above the
core count, other processes were competing and every figure is slower than the machine can do; the
ratio within one run is the number to read then.

    .venv/bin/python -m bench.magnet [--full] [--precisions float32,bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "upbeat electronic dance track with punchy drums"
SECONDS = 10.0
FRAME_RATE = 50


def _lm(kind: str, precision: str):
    import torch

    from bench.common import build_real_shape
    from lib.catalogue import get_spec
    from server.models.convert.xpcfg import MagnetSettings
    from server.models.device import pick_precision
    from server.models.magnet import MagnetLM
    from server.models.musicgen import audiocraft_positions, prepare
    from server.tiny.tokenizer import build_tokenizer

    device = torch.device("cpu")
    model = build_real_shape("musicgen-small", seed=0)  # magnet-small's transformer has this shape
    name = "magnet-small-10secs" if kind == "magnet" else "musicgen-small"
    if kind == "magnet":
        embed = model.decoder.model.decoder.embed_positions
        embed.weights = audiocraft_positions(embed.weights.shape[0], embed.weights.shape[1])
    lm = prepare(model, get_spec(name), build_tokenizer(), device, pick_precision(precision, device), Path("/dev/null"))
    if kind == "magnet":
        fields = {k: getattr(lm, k) for k in ("spec", "device", "precision", "source", "model", "tokenizer", "fast")}
        lm = MagnetLM(**fields, masking=MagnetSettings(span_len=3, subcodes_context=5, segment_duration_s=10.0))
    return lm


def run_child(kind: str, precision: str, iterations: int | None, threads: int) -> dict:
    import torch

    from server.engine.decode import DecodeBatch, DecodeRequest, codes_to_audio
    from server.engine.magnet import MagnetBatch, MagnetRequest, frames_for

    torch.set_num_threads(threads)
    lm = _lm(kind, precision)
    out: dict = {"model": lm.spec.name, "precision": lm.precision, "threads": threads}
    if kind == "magnet":
        batch = MagnetBatch(lm)
        handle = batch.add(MagnetRequest(PROMPT, frames_for(lm, SECONDS, "nonoverlap"), seed=0))
        total = batch.progress(handle)[1]
        out["units"] = total
        if iterations is None:
            started = time.perf_counter()
            while len(batch):
                batch.step()
            out["generate_s"] = time.perf_counter() - started
            codes = batch.pop(handle)
        else:
            member = batch._members[0]
            per_stage: list[float] = []
            for stage_iterations in (iterations - iterations // 2, iterations // 2):
                started = time.perf_counter()
                for _ in range(stage_iterations):
                    batch.step()
                per_stage.append((time.perf_counter() - started) / max(1, stage_iterations))
                if member.stage == 0:  # on to the banded-mask codebooks (same shapes, only the mask differs)
                    member._next_stage()
            first, rest = member.params.decoding_steps[0], total - member.params.decoding_steps[0]
            out["iteration_s"] = per_stage
            out["generate_s"] = per_stage[0] * first + per_stage[1] * rest
            out["extrapolated"] = True
            codes = None
    else:
        n_frames = round(SECONDS * FRAME_RATE)
        batch = DecodeBatch(lm)
        handle = batch.add(DecodeRequest(PROMPT, n_frames, seed=0))
        total = batch.progress(handle)[1]
        out["units"] = total
        steps = total if iterations is None else min(total, 10 * iterations)
        started = time.perf_counter()
        for _ in range(steps):
            batch.step()
        took = time.perf_counter() - started
        out["step_s"] = took / steps
        out["generate_s"] = took * total / steps
        out["extrapolated"] = steps < total
        codes = batch.pop(handle) if iterations is None else None
    if codes is not None:
        started = time.perf_counter()
        audio = codes_to_audio(lm, codes)
        out["decode_s"] = time.perf_counter() - started
        out["audio_s"] = audio.shape[-1] / lm.sample_rate
    return out


def child(kind: str, precision: str, iterations: int | None, threads: int) -> dict:
    cmd = [sys.executable, "-m", "bench.magnet", "--child", kind, "--precisions", precision, "--threads", str(threads)]
    cmd += ["--full"] if iterations is None else ["--iterations", str(iterations)]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{kind}/{precision} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--iterations", type=int, default=4, help="MAGNeT iterations timed (MusicGen: 10x steps)")
    parser.add_argument("--full", action="store_true", help="run both generations whole")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["magnet", "musicgen"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    iterations = None if args.full else max(2, args.iterations)
    if args.child:
        print(json.dumps(run_child(args.child, args.precisions, iterations, args.threads)))
        return 0
    rows = []
    for precision in args.precisions.split(","):
        pair = {kind: child(kind, precision, iterations, args.threads) for kind in ("musicgen", "magnet")}
        rows.append(pair)
        m, g = pair["magnet"], pair["musicgen"]
        loads = [*g["load"], *m["load"]]
        print(
            f"{precision:9s} musicgen-small {g['generate_s']:7.1f} s ({g['units']} steps,"
            f" {1000 * g['step_s']:.0f} ms each)"
            f"  magnet-small-10secs {m['generate_s']:7.1f} s ({m['units']} iterations)"
            f"  magnet/musicgen {m['generate_s'] / g['generate_s']:.2f}x"
            f"  load {min(loads):.1f}-{max(loads):.1f}{'  (extrapolated)' if iterations else ''}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"seconds": SECONDS, "iterations": iterations, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
