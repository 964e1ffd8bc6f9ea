"""The EnCodec decode that ends each generation: transformers' decoder (the float32 exact mode)
against the engine's channels-last one (every other precision on the CPU), in one process,
alternating, best of --rounds.

Real-shape random-weight 32 kHz EnCodec (same compute and memory as the released one); each
request is 5 s of codes with the engine's 1 s of context on each side (decode.DECODE_CONTEXT_FRAMES),
decoded as the server does it: decode.codec_decoder, one pass for requests that finish together.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.codec_decode [--requests 1 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import real_shape_config
from bench.load import cpu_header
from server.engine.decode import DECODE_CONTEXT_FRAMES, codec_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from transformers import EncodecModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = EncodecModel(real_shape_config("musicgen-small").audio_encoder).eval()
    frames = round(args.duration * codec.config.frame_rate) + 2 * DECODE_CONTEXT_FRAMES
    forms = {"transformers": codec_decoder(codec, exact=True), "channels-last": codec_decoder(codec, exact=False)}
    print(f"# {cpu_header()}")
    print(f"EnCodec 32 kHz decode of {args.duration:g} s requests ({frames} frames with context), ", end="")
    print(f"best of {args.rounds}\n")
    print("| requests in the pass | transformers (s) | channels-last (s) | per request (s) | speed-up | max diff |")
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for n in args.requests:
            generator = torch.Generator().manual_seed(n)
            codes = torch.randint(0, codec.config.codebook_size, (n, 4, frames), generator=generator)
            outs = {name: decode(codes) for name, decode in forms.items()}  # warm: oneDNN's primitives
            best = dict.fromkeys(forms, float("inf"))
            for _ in range(args.rounds):
                for name, decode in forms.items():
                    start = time.perf_counter()
                    decode(codes)
                    best[name] = min(best[name], time.perf_counter() - start)
            diff = (outs["channels-last"] - outs["transformers"]).abs().max().item()
            print(
                f"| {n} | {best['transformers']:.2f} | {best['channels-last']:.2f} | "
                f"{best['transformers'] / n:.2f} → {best['channels-last'] / n:.2f} | "
                f"{best['transformers'] / best['channels-last']:.2f}x | {diff:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
