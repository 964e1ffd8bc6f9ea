"""What AudioSeal's watermark costs a generation: embedding and detection time at the real shape.

The generator and detector are built with facebook/audioseal's real config (audiocraft's watermark
SEANet: dimension 128, 32 filters, ratios 8 5 4 2, two LSTM layers, 16-bit messages) and random
weights: time depends on the shape, not on the values. Each figure is the median of `--repeats`
runs, after a warm-up, of `server.engine.watermark.embed` / `detect` (soxr to and from 16 kHz
included) on audio at the models' output rates, with the audio's duration for scale (realtime_x).

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.watermark [--seconds 10 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from server.engine import watermark
from server.engine.watermark import Detector, Generator, WatermarkConfig
from server.models.convert.audioseal import seanet_config
from server.tiny.audioseal import NBITS, OUTPUT_DIM, xp_cfg

# facebook/audioseal's widths (the tiny model's are 16 and 4).
REAL_WIDTHS = {"dimension": 128, "n_filters": 32}


def real_config() -> WatermarkConfig:
    cfg = xp_cfg()
    cfg["seanet"].update(REAL_WIDTHS)
    return WatermarkConfig(seanet=seanet_config(cfg, "bench"), nbits=NBITS, output_dim=OUTPUT_DIM)


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--rates", type=int, nargs="+", default=[32000, 16000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = real_config()
    torch.manual_seed(0)
    generator, detector = Generator(config).eval(), Detector(config).eval()
    params = sum(p.numel() for p in generator.parameters()), sum(p.numel() for p in detector.parameters())
    rows = []
    rng = np.random.default_rng(0)
    warm = np.zeros((1, 16000), dtype=np.float32)  # oneDNN builds its kernels on the first call of each shape kind
    watermark.embed(generator, warm, 16000, 0)
    watermark.detect(detector, warm, 16000)
    for rate in args.rates:
        for seconds in args.seconds:
            audio = (0.1 * rng.standard_normal((1, round(seconds * rate)))).astype(np.float32)
            embed_s = _median_s(lambda a=audio, r=rate: watermark.embed(generator, a, r, 0xBEEF), args.repeats)
            detect_s = _median_s(lambda a=audio, r=rate: watermark.detect(detector, a, r), args.repeats)
            rows.append(
                {
                    "sample_rate": rate,
                    "audio_s": seconds,
                    "embed_s": round(embed_s, 3),
                    "detect_s": round(detect_s, 3),
                    "embed_realtime_x": round(seconds / embed_s, 1),
                    "detect_realtime_x": round(seconds / detect_s, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "generator_params": params[0],
                "detector_params": params[1],
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
