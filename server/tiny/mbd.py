"""A tiny random-weight Multi-Band Diffusion checkpoint in the published layout, written without the
audiocraft package.

`mbd_musicgen_32khz.th` as AudioCraft's `load_diffusion_models` reads it: {'sample_rate', 'n_bands',
0..3: {'cfg': an OmegaConf config, 'model_state', 'processor_state'}}. The bands are those of
AudioCraft's 4-band MusicGen grid (processors on the two upper bands, power_std 0.4 and 0.75, the
1000-step power schedule of config/solver/diffusion/default.yaml) with tiny U-Nets conditioned on
the tiny MusicGen EnCodec's latent (its width: server/tiny/dims.py). test/conformance loads this
file with audiocraft itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from server.models.convert.mbd_checkpoint import MUSICGEN_FILE, band_config
from server.tiny.dims import TINY

SAMPLE_RATE = 32000

# One band's training config, as far as inference reads it (and the few keys around it).
BAND_CFG: dict[str, Any] = {
    "sample_rate": SAMPLE_RATE,
    "channels": 1,
    "device": "cpu",
    "schedule": {
        "repartition": "power", "variable_step_batch": True, "beta_t0": 1.0e-5, "beta_t1": 2.9e-2, "beta_exp": 7.5,
        "num_steps": 1000, "variance": "beta", "clip": 5.0, "rescale": 1.0, "n_bands": None, "noise_scale": 1.0,
    },
    "diffusion_unet": {
        "hidden": 8, "depth": 3, "res_blocks": 1, "norm_groups": 4, "kernel": 8, "stride": 4, "growth": 2,
        "max_channels": 10000, "dropout": 0.0, "emb_all_layers": True, "bilstm": False,
        "codec_dim": TINY["audio_encoder"]["hidden_size"], "transformer": False, "cross_attention": False,
    },
    "processor": {"name": "multi_band_processor", "use": False, "n_bands": 8, "num_samples": 10000, "power_std": 0.4},
    "filter": {"use": True, "n_bands": 4, "idx_band": 0, "cutoffs": None},
}  # fmt: skip
# (processor.use, processor.power_std) of each band, as in the grid.
BANDS = [(False, 0.4), (False, 0.4), (True, 0.4), (True, 0.75)]


def band_cfgs(unet: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The four bands' configs (`unet` overrides diffusion_unet: the benchmark's real widths)."""
    out = []
    for i, (use, power) in enumerate(BANDS):
        cfg = copy.deepcopy(BAND_CFG)
        cfg["processor"] |= {"use": use, "power_std": power}
        cfg["filter"]["idx_band"] = i
        cfg["diffusion_unet"] |= unet or {}
        out.append(cfg)
    return out


def fitted_state(processor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Processor buffers as training leaves them: band statistics of audio and of noise."""
    audio = 0.3 * torch.randn(4, 1, 4000, generator=gen) * torch.linspace(0.2, 1.0, 4000)
    bands, noise = processor.split_bands(audio), processor.split_bands(torch.randn(4, 1, 4000, generator=gen))
    processor.counts.fill_(4.0)
    processor.sum_x.copy_(bands.mean(dim=(2, 3)).sum(dim=1))
    processor.sum_x2.copy_(bands.pow(2).mean(dim=(2, 3)).sum(dim=1))
    processor.sum_target_x2.copy_(noise.pow(2).mean(dim=(2, 3)).sum(dim=1))
    return processor.state_dict()


def save_files(out: Path, seed: int, unet: dict[str, Any] | None = None) -> None:
    """Write the checkpoint into `out` (`unet`: other U-Net widths, as band_cfgs)."""
    from omegaconf import OmegaConf

    from server.engine.mbd.build import build_bands

    cfgs = band_cfgs(unet)
    config = {"sample_rate": SAMPLE_RATE, "bands": [band_config(c, i) for i, c in enumerate(cfgs)]}
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = build_bands(config)
    pkg: dict[Any, Any] = {"sample_rate": SAMPLE_RATE, "n_bands": len(cfgs)}
    for i, (cfg, band) in enumerate(zip(cfgs, modules.bands, strict=True)):
        with torch.no_grad():  # group norms away from (1, 0): a dropped or swapped one changes the audio
            for name, p in band.unet.named_parameters():
                if ".norm" in name:
                    p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=gen))
        processor = getattr(band, "processor", None)
        state = {} if processor is None else fitted_state(processor, gen)
        pkg[i] = {
            "cfg": OmegaConf.create(cfg),
            "model_state": {k: v.detach().clone() for k, v in band.unet.state_dict().items()},
            "processor_state": {k: v.detach().clone() for k, v in state.items()},
        }
    torch.save(pkg, out / MUSICGEN_FILE)
