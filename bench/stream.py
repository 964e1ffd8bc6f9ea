"""Streaming: time to first audio against total time, and how close streamed audio is to one pass.

    .venv/bin/python bench/stream.py                     # both parts, musicgen-small real shape
    .venv/bin/python bench/stream.py --part server --durations 10,30
    .venv/bin/python bench/stream.py --part codec

`server`: a real server (`python -m server`) on a random-weight musicgen-small of the real shape
(written once into --hub, as bench/concurrency.py does; the compute is the released model's), at the
CPU default precision. After one warm-up request (the model load), each duration is one POST with
"stream": true (wav, native rate): the time from sending it to the first audio bytes (past the WAV
header), to the last byte, and the job's progress when the first audio came. The spec's bar: first
audio before half of the job's time.

`codec`: the real-shape 32 kHz EnCodec (random weights), 10 s of random codes. The streamed decode
(server/engine/live.py: EnCodec's decoder run as a stream with its state) against the one-pass
decode: the largest sample difference, and its time for the chunk sizes the lane uses; then the
alternative it replaces, decoding each chunk afresh with L frames of left context and R frames of
right look-ahead and dropping them, for a few L and R.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

from server_process import ServerProcess  # noqa: E402

from bench.concurrency import install_real_shape  # noqa: E402

HEADER_BYTES = 44
PROMPT = "upbeat electronic music with a groovy bassline and punchy drums, 120 bpm"


def stream_once(client, duration_s: float, seed: int) -> dict:
    body = {"prompt": PROMPT, "duration": duration_s, "seed": seed, "stream": True, "sample_rate": "native"}
    started = time.perf_counter()
    first = None
    received = 0
    progress = None
    with client.stream("POST", "/api/generate/music", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            received += len(chunk)
            if first is None and received > HEADER_BYTES:
                first = time.perf_counter() - started
                progress = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()["progress"]
    total = time.perf_counter() - started
    return {"duration_s": duration_s, "first_s": first, "total_s": total, "progress_at_first": progress}


def server_part(hub: Path, durations: list[float]) -> list[dict]:
    install_real_shape(hub, "musicgen-small")
    with tempfile.TemporaryDirectory(prefix="audiocraft-bench-stream-") as data:
        proc = ServerProcess(hub, Path(data)).start()
        try:
            with proc.client() as c:
                stream_once(c, 1.0, seed=0)  # the model load
                return [stream_once(c, d, seed=i + 1) for i, d in enumerate(durations)]
        finally:
            proc.terminate()


def codec_part(seconds: float = 10.0) -> dict:
    from types import SimpleNamespace

    import numpy as np
    import torch

    from server.engine.live import LiveAudio
    from server.engine.text_to_audio import LIVE_CHUNK_FRAMES, LIVE_FIRST_CHUNK_FRAMES
    from server.tiny.encodec import build_model, real_config

    codec = build_model(real_config("encodec-32khz"), seed=0)
    model = SimpleNamespace(audio_encoder=codec)
    lm = SimpleNamespace(model=model, channels=1, stereo=False, device=torch.device("cpu"))
    hop, frames = 640, round(seconds * 50)
    codes = torch.randint(0, 2048, (4, frames), generator=torch.Generator().manual_seed(0))

    def one_pass(c: torch.Tensor) -> np.ndarray:
        return codec.decode(c[None, None], audio_scales=[None]).audio_values[0].numpy()

    out: dict = {"seconds": seconds}
    with torch.inference_mode():
        started = time.perf_counter()
        reference = one_pass(codes)
        out["one_pass_s"] = time.perf_counter() - started
        out["live"] = []
        for first, rest in ((LIVE_FIRST_CHUNK_FRAMES, LIVE_CHUNK_FRAMES), (25, 25), (100, 100)):
            live = LiveAudio(lm, 0, frames * hop)
            parts, start, size = [], 0, first
            started = time.perf_counter()
            while start < frames:
                parts.append(live.push(codes[:, start : start + size]))
                start, size = start + size, rest
            parts.append(live.finish())
            took = time.perf_counter() - started
            error = float(np.abs(np.concatenate(parts, axis=-1) - reference).max())
            out["live"].append({"chunks": f"{first} then {rest}", "s": took, "max_error": error})
        out["overlap"] = []
        for left in (0, 10, 50):
            for right in (3, 10):
                pieces = []
                for s in range(0, frames, 50):
                    a, e = max(0, s - left), min(frames, s + 50 + right)
                    pieces.append(one_pass(codes[:, a:e])[:, (s - a) * hop : (s - a + min(50, frames - s)) * hop])
                error = float(np.abs(np.concatenate(pieces, axis=-1) - reference).max())
                out["overlap"].append({"left": left, "right": right, "max_error": error})
    out["peak"] = float(np.abs(reference).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("server", "codec", "both"), default="both")
    parser.add_argument("--hub", type=Path, default=Path("/tmp/audiocraft-bench-hub"))
    parser.add_argument("--durations", default="10,30", help="seconds of audio per streamed request")
    args = parser.parse_args()
    from server.engine.cpu import label

    print(f"# {label()}, {os.cpu_count()} cpus", flush=True)
    if args.part in ("server", "both"):
        rows = server_part(args.hub, [float(d) for d in args.durations.split(",")])
        print("\n| audio | first audio | total | first / total | job progress at first audio |")
        print("|---|---|---|---|---|")
        for r in rows:
            ratio = r["first_s"] / r["total_s"]
            print(
                f"| {r['duration_s']:g} s | {r['first_s']:.2f} s | {r['total_s']:.2f} s | {ratio:.3f} | "
                f"{r['progress_at_first']:.3f} |"
            )
    if args.part in ("codec", "both"):
        c = codec_part()
        print(f"\nreal-shape 32 kHz EnCodec, {c['seconds']:g} s of random codes (peak {c['peak']:.3f}):")
        print(f"one pass: {c['one_pass_s']:.2f} s")
        print("\n| streamed decode, chunks (frames) | time | max difference from one pass |")
        print("|---|---|---|")
        for r in c["live"]:
            print(f"| {r['chunks']} | {r['s']:.2f} s | {r['max_error']:.2e} |")
        print("\n| overlap decode: left context L, look-ahead R (frames) | max difference from one pass |")
        print("|---|---|")
        for r in c["overlap"]:
            print(f"| L {r['left']}, R {r['right']} | {r['max_error']:.2e} |")


if __name__ == "__main__":
    main()
