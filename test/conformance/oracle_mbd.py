"""The audiocraft side of the MBD conformance test. Runs in the oracle's venv:
`python oracle_mbd.py OUT_DIR [PROJECT_TINY_CHECKPOINT]`.

It builds a tiny 32 kHz compression model and a tiny 4-band MBD with audiocraft's own builders (the
band configs of AudioCraft's 4-band MusicGen grid: processors on the two upper bands, power_std 0.4
and 0.75), fits the band processors on noise through their own `project_sample`, saves the MBD in
the published checkpoint layout, loads it back through `load_diffusion_models` and decodes fixed
tokens through `MultiBandDiffusion.tokens_to_wav` (and `generate` + `re_eq` with a shorter step
list) after `torch.manual_seed`. With a second argument it also loads the project's own tiny
checkpoint (`models make-tiny`'s) through the same loader and decodes with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import oracle  # noqa: E402  (sets the environment up from argv[1], as for the other models)
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

OUT = oracle.OUT
SAMPLE_RATE = 32000
RATIOS = [8, 5, 4, 4]  # 640 samples a frame: 50 Hz
FRAMES = 40
SEEDS = {"mono": 5, "stereo": 6, "steps": 7}
SHORT_STEPS = 7
CODEC_DIM = 16


def band_cfg(index: int) -> dict:
    """config/solver/diffusion/default.yaml and model/score/basic.yaml, tiny widths; the grid's band."""
    upper = index >= 2
    return {
        "sample_rate": SAMPLE_RATE, "channels": 1, "device": "cpu",
        "schedule": {
            "repartition": "power", "variable_step_batch": True, "beta_t0": 1.0e-5, "beta_t1": 2.9e-2,
            "beta_exp": 7.5, "num_steps": 1000, "variance": "beta", "clip": 5.0, "rescale": 1.0,
            "n_bands": None, "noise_scale": 1.0,
        },
        "diffusion_unet": {
            "hidden": 8, "depth": 3, "res_blocks": 1, "norm_groups": 4, "kernel": 8, "stride": 4, "growth": 2,
            "max_channels": 10000, "dropout": 0.0, "emb_all_layers": True, "bilstm": False, "codec_dim": CODEC_DIM,
            "transformer": False, "cross_attention": False,
        },
        "processor": {
            "name": "multi_band_processor", "use": upper, "n_bands": 8, "num_samples": 10000,
            "power_std": 0.75 if index == 3 else 0.4,
        },
        "filter": {"use": True, "n_bands": 4, "idx_band": index, "cutoffs": None},
    }  # fmt: skip


def build_mbd(path: Path, seed: int) -> None:
    from audiocraft.models import builders

    torch.manual_seed(seed)
    pkg: dict = {"sample_rate": SAMPLE_RATE, "n_bands": 4}
    for i in range(4):
        cfg = OmegaConf.create(band_cfg(i))
        model = builders.get_diffusion_model(cfg)
        with torch.no_grad():  # group norms away from (1, 0): a dropped or swapped one changes the audio
            for name, p in model.named_parameters():
                if ".norm" in name:
                    p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
        processor = builders.get_processor(cfg.processor, sample_rate=SAMPLE_RATE)
        if cfg.processor.use:  # fitted as training fits it: project_sample on audio it sees
            for _ in range(3):
                processor.project_sample(0.3 * torch.randn(4, 1, 4000) * torch.linspace(0.2, 1.0, 4000))
        pkg[i] = {"cfg": cfg, "model_state": model.state_dict(), "processor_state": processor.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pkg, path)


def load(checkpoint: Path, codec):
    from audiocraft.models.loaders import load_diffusion_models
    from audiocraft.models.multibanddiffusion import DiffusionProcess, MultiBandDiffusion
    from audiocraft.modules.diffusion_schedule import NoiseSchedule

    models, processors, cfgs = load_diffusion_models(str(checkpoint.parent), filename=checkpoint.name, device="cpu")
    dps = [
        DiffusionProcess(model=m, noise_schedule=NoiseSchedule(**c.schedule, sample_processor=p, device="cpu"))
        for m, p, c in zip(models, processors, cfgs, strict=True)
    ]
    return MultiBandDiffusion(DPs=dps, codec_model=codec)


def main() -> None:
    import numpy as np
    from audiocraft.models.loaders import load_compression_model

    torch.set_num_threads(1)
    root = OUT / "mbd"
    export = root / "export"
    export.mkdir(parents=True, exist_ok=True)
    codec_cfg = oracle.compression_cfg(SAMPLE_RATE, RATIOS)
    codec_cfg["seanet"]["dimension"] = CODEC_DIM  # the tiny MusicGen EnCodec's latent width (server/tiny/dims.py)
    ccfg = OmegaConf.create(codec_cfg)
    from audiocraft.models import builders

    codec = builders.get_compression_model(ccfg)
    oracle.randomise(codec, 303)
    torch.save(
        {"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(ccfg)}, export / "compression_state_dict.bin"
    )
    codec = load_compression_model(str(export), device="cpu")
    checkpoint = root / "checkpoint" / "mbd_musicgen_32khz.th"
    build_mbd(checkpoint, 404)
    gen = torch.Generator().manual_seed(9)
    tokens = {
        "mono": torch.randint(0, 2048, (1, 4, FRAMES), generator=gen),
        "stereo": torch.randint(0, 2048, (2, 4, FRAMES), generator=gen),  # L and R rows, as the app stacks them
    }
    results = {"checkpoint": str(checkpoint), "compression": str(export), "frames": FRAMES, "seeds": SEEDS,
               "short_steps": SHORT_STEPS, "runs": {}}  # fmt: skip
    checkpoints = {"oracle": checkpoint}
    if len(sys.argv) > 2:
        checkpoints["project"] = Path(sys.argv[2]).resolve()
    for who, path in checkpoints.items():
        mbd = load(path, codec)
        for name, rows in tokens.items():
            np.save(root / f"tokens-{name}.npy", rows.numpy())
            torch.manual_seed(SEEDS[name])
            with torch.no_grad():
                wav = mbd.tokens_to_wav(rows)
            np.save(root / f"{who}-{name}.npy", wav.numpy())
            results["runs"][f"{who}-{name}"] = {"tokens": f"tokens-{name}.npy", "audio": f"{who}-{name}.npy",
                                                "seed": SEEDS[name], "steps": 20}  # fmt: skip
        # A shorter chain, the way the steps setting makes it: every (1000 // n)-th state, then 0.
        step_list = list(range(1000))[:: -(1000 // SHORT_STEPS)][:SHORT_STEPS] + [0]
        rows = tokens["mono"]
        torch.manual_seed(SEEDS["steps"])
        with torch.no_grad():
            ref = mbd.codec_model.decode(rows)
            wav = mbd.generate(emb=mbd.get_emb(rows), size=ref.size(), step_list=step_list)
            wav = mbd.re_eq(wav=wav, ref=ref, n_bands=32)
        np.save(root / f"{who}-steps.npy", wav.numpy())
        results["runs"][f"{who}-steps"] = {
            "tokens": "tokens-mono.npy", "audio": f"{who}-steps.npy", "seed": SEEDS["steps"], "steps": SHORT_STEPS,
            "step_list": step_list,
        }  # fmt: skip
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
