"""Multi-Band Diffusion against EnCodec: seconds to decode the same MusicGen tokens.

Real shapes, random weights (same compute and memory as the released ones): the 32 kHz EnCodec of
MusicGen (bench/common.py) and a 4-band MBD whose U-Nets have the shape AudioCraft's configs give
the published checkpoint (config/model/score/basic.yaml: hidden 48, depth 4, growth 4, kernel 8,
stride 4, step embeddings on every layer; conditioned on the 128-wide EnCodec latent). Random codes
of --seconds of audio, mono; EnCodec first, then MBD at each --steps, in one process, so the ratio
holds on a loaded machine. Reported with the load average at the start and the end.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.mbd [--seconds 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time

# The published checkpoint's U-Net widths (beyond server/tiny/mbd.py's BAND_CFG, which is tiny).
REAL_UNET = {"hidden": 48, "depth": 4, "growth": 4, "kernel": 8, "stride": 4, "codec_dim": 128}


def real_shape_mbd():
    import torch

    from lib.catalogue import get_spec
    from server.engine.mbd.build import build_bands, multiband
    from server.models.convert.mbd_checkpoint import band_config
    from server.models.mbd import DiffusionDecoder
    from server.tiny.mbd import SAMPLE_RATE, band_cfgs, fitted_state

    config = {"sample_rate": SAMPLE_RATE, "bands": [band_config(c, i) for i, c in enumerate(band_cfgs(REAL_UNET))]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        modules = build_bands(config).eval()
    gen = torch.Generator().manual_seed(1)
    for band in modules.bands:
        if hasattr(band, "processor"):
            fitted_state(band.processor, gen)
    return DiffusionDecoder(
        spec=get_spec("mbd-musicgen-32khz"), device=torch.device("cpu"), precision="float32", source=None,
        modules=modules, multiband=multiband(config, modules),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    args = parser.parse_args()
    import torch
    from transformers import EncodecModel

    from bench.common import peak_rss_mb, real_shape_config
    from server.engine.mbd.decode import rows_to_audio

    load_start = os.getloadavg()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = EncodecModel(real_shape_config("musicgen-small").audio_encoder).eval()
    mbd = real_shape_mbd()
    frames = round(args.seconds * 50)
    rows = torch.randint(0, 2048, (1, 4, frames), generator=torch.Generator().manual_seed(2))
    out = {
        "seconds_of_audio": args.seconds, "threads": torch.get_num_threads(),
        "mbd_parameters_m": round(sum(p.numel() for p in mbd.modules.parameters()) / 1e6, 1),
        "loadavg_start": [round(x, 1) for x in load_start],
    }  # fmt: skip
    with torch.inference_mode():
        codec.decode(rows[None, :, :, :50], audio_scales=[None])  # warm-up
        started = time.perf_counter()
        codec.decode(rows[None], audio_scales=[None])
        out["encodec_s"] = round(time.perf_counter() - started, 2)
        for steps in args.steps:
            started = time.perf_counter()
            audio = rows_to_audio(codec, mbd, rows, steps, seed=0)
            took = time.perf_counter() - started
            assert audio.shape[-1] == frames * 640 and bool(torch.isfinite(audio).all())
            out[f"mbd_{steps}_steps_s"] = round(took, 1)
            out[f"mbd_{steps}_steps_x_encodec"] = round(took / out["encodec_s"], 1)
            out[f"mbd_{steps}_steps_x_realtime"] = round(took / args.seconds, 1)
    out["peak_rss_mb"] = round(peak_rss_mb())
    out["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
