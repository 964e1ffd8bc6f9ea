"""EnCodec codec benchmark: compression ratio, encode/decode real-time factor, peak memory.

    .venv/bin/python -m bench.codec                 # everything (about 10-20 minutes on 2 cores)
    .venv/bin/python -m bench.codec --long-minutes 0 --seconds 10    # a quick look

Models are random-weight EncodecModels of the released checkpoints' shapes (transformers'
EncodecConfig defaults are facebook/encodec_24khz; the 48 kHz and 32 kHz ones differ where their
config.json files do, see server/tiny/encodec.py), so compute and memory are the real
ones; nothing is downloaded. Codebooks are random too, so the bytes are not meaningful audio, but
their count is: the .ecdc size depends only on length, model and bandwidth.

- ratio: 16-bit PCM at the input's rate and channels (here the model's own) over the .ecdc size,
  header included;
- RTF: processing seconds per second of audio (below 1 is faster than real time), through the
  service's own path (`encode_file` / `decode_file`: WAV on disk in, file on disk out);
- peak RSS: a fresh process per model encodes then decodes a 10-minute 44.1 kHz stereo WAV; the
  table gives the peak RSS of the process and its growth over the baseline taken after loading
  the model and a short warm-up, next to the size the input would take in memory as float32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("encodec-24khz", "encodec-48khz", "encodec-32khz")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _real_codec(name: str, seed: int = 0):
    import torch

    from lib.catalogue import get_spec
    from server.engine.codec.codec import Codec, layout_for
    from server.tiny.encodec import build_model, real_config

    spec = get_spec(name)
    model = build_model(real_config(name), seed)
    return Codec(spec=spec, model=model, layout=layout_for(spec, model.config), device=torch.device("cpu"))


def _model_bytes(codec) -> int:
    m = codec.model
    return sum(p.numel() * p.element_size() for p in m.parameters()) + sum(
        b.numel() * b.element_size() for b in m.buffers()
    )


def _signal(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """Something music-like: a few drifting tones and a little noise, (frames, channels)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    out = np.zeros((n, channels), dtype=np.float32)
    for c in range(channels):
        x = sum(0.15 * np.sin(2 * np.pi * f * (1 + 0.01 * c) * t + rng.uniform(0, 6)) for f in (110, 220, 330, 523))
        out[:, c] = (x + 0.02 * rng.standard_normal(n)).astype(np.float32)
    return out


def _wav(path: Path, seconds: float, rate: int, channels: int, block_s: float = 30.0) -> None:
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        done = 0.0
        while done < seconds:
            step = min(block_s, seconds - done)
            f.write(_signal(step, rate, channels, seed=int(done)))
            done += step


def speed(names: list[str], seconds: float) -> list[dict]:
    from lib.schemas import DecodeOptions
    from server.engine.codec.service import decode_file, encode_file, open_ecdc

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            codec = _real_codec(name)
            rate, channels = codec.layout.sample_rate, codec.layout.channels
            wav = Path(tmp) / f"{name}.wav"
            _wav(wav, seconds, rate, channels)
            # Warm-up: first calls pay for allocations and kernel selection.
            with open(wav, "rb") as f:
                encode_file(codec, f, wav.stat().st_size, wav.name, codec.bandwidths[0]).path.unlink()
            for bw in codec.bandwidths:
                with open(wav, "rb") as f:
                    t0 = time.perf_counter()
                    enc = encode_file(codec, f, wav.stat().st_size, wav.name, bw)
                    t_enc = time.perf_counter() - t0
                with open(enc.path, "rb") as f:
                    t0 = time.perf_counter()
                    plan = open_ecdc(lambda _n, c=codec: c, f, enc.ecdc_bytes)
                    dec = decode_file(plan, f, DecodeOptions(format="wav"), max_loudness_s=0)
                    t_dec = time.perf_counter() - t0
                duration = enc.duration_s
                assert dec.frames == enc.header.audio_length
                rows.append(
                    {
                        "model": name,
                        "bandwidth_kbps": bw,
                        "codebooks": enc.header.num_codebooks,
                        "seconds": duration,
                        "ecdc_bytes": enc.ecdc_bytes,
                        "bitrate_kbps": enc.bitrate_kbps,
                        "ratio": enc.compression_ratio,
                        "encode_rtf": t_enc / duration,
                        "decode_rtf": t_dec / duration,
                        "model_mb": _model_bytes(codec) / 1e6,
                    }
                )
                enc.path.unlink()
                dec.path.unlink()
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def memory_child(name: str, minutes: float) -> dict:
    """Run in a fresh process: baseline after load + warm-up, then a long encode and decode."""
    from lib.schemas import DecodeOptions
    from server.engine.codec.service import decode_file, encode_file, open_ecdc

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        _wav(wav, minutes * 60, 44100, 2)
        codec = _real_codec(name)
        short = Path(tmp) / "short.wav"
        _wav(short, 12.0, 44100, 2)
        with open(short, "rb") as f:
            warm = encode_file(codec, f, short.stat().st_size, None, codec.bandwidths[-1])
        with open(warm.path, "rb") as f:
            decode_file(open_ecdc(lambda _n: codec, f, warm.ecdc_bytes), f, DecodeOptions(), 0).path.unlink()
        warm.path.unlink()
        baseline = _rss_mb()
        t0 = time.perf_counter()
        with open(wav, "rb") as f:
            enc = encode_file(codec, f, wav.stat().st_size, None, codec.bandwidths[-1])
        t_enc = time.perf_counter() - t0
        after_encode = _rss_mb()
        t0 = time.perf_counter()
        with open(enc.path, "rb") as f:
            dec = decode_file(open_ecdc(lambda _n: codec, f, enc.ecdc_bytes), f, DecodeOptions(), 0)
        t_dec = time.perf_counter() - t0
        peak = _rss_mb()
        full = enc.header.audio_length * codec.layout.channels * 4 / 2**20
        result = {
            "model": name,
            "minutes": minutes,
            "input_mb": wav.stat().st_size / 2**20,
            "ecdc_mb": enc.ecdc_bytes / 2**20,
            "decoded_mb": dec.path.stat().st_size / 2**20,
            "baseline_rss_mb": baseline,
            "peak_rss_after_encode_mb": after_encode,
            "peak_rss_mb": peak,
            "growth_mb": peak - baseline,
            "float32_audio_mb": full,
            "encode_rtf": t_enc / enc.duration_s,
            "decode_rtf": t_dec / enc.duration_s,
        }
        enc.path.unlink()
        dec.path.unlink()
        return result


def memory(names: list[str], minutes: float) -> list[dict]:
    rows = []
    for name in names:
        cmd = [sys.executable, "-m", "bench.codec", "--child-memory", name, "--long-minutes", str(minutes)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(speed_rows: list[dict], memory_rows: list[dict]) -> str:
    lines = []
    if speed_rows:
        lines += [
            "| model | kbps | codebooks | .ecdc bitrate (kbps) | ratio vs 16-bit PCM | encode RTF | decode RTF |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in speed_rows:
            lines.append(
                f"| {r['model']} | {r['bandwidth_kbps']:g} | {r['codebooks']} | {r['bitrate_kbps']:.2f} | "
                f"{r['ratio']:.1f}:1 | {r['encode_rtf']:.3f} | {r['decode_rtf']:.3f} |"
            )
    if memory_rows:
        lines += [
            "",
            "| model (top bandwidth) | input | baseline RSS | peak RSS | growth | input as float32 | "
            "encode RTF | decode RTF |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in memory_rows:
            lines.append(
                f"| {r['model']} | {r['minutes']:g} min 44.1 kHz stereo WAV ({r['input_mb']:.0f} MB) | "
                f"{r['baseline_rss_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB | {r['growth_mb']:.0f} MB | "
                f"{r['float32_audio_mb']:.0f} MB | {r['encode_rtf']:.3f} | {r['decode_rtf']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seconds", type=float, default=30.0, help="audio per speed measurement")
    p.add_argument("--long-minutes", type=float, default=10.0, help="input of the memory run; 0 skips it")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of markdown")
    p.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        print(json.dumps(memory_child(args.child_memory, args.long_minutes)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", file=sys.stderr)
    speed_rows = speed(args.models, args.seconds) if args.seconds > 0 else []
    memory_rows = memory(args.models, args.long_minutes) if args.long_minutes > 0 else []
    if args.json:
        print(json.dumps({"speed": speed_rows, "memory": memory_rows}, indent=2))
    else:
        print(markdown(speed_rows, memory_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
