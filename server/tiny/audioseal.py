"""A tiny AudioSeal in its published layout, written without the audioseal package.

facebook/audioseal's files: `generator_base.pth` and `detector_base.pth`, each a torch pickle of
{'xp.cfg': the inference part of the training config, 'model': the state dict under audiocraft's
SEANet names, weight norm folded into plain weights (the form audioseal 0.2's loader takes on
Python 3.10 and later; the converter takes the weight_g / weight_v form too)}, and `base.yaml`, the
Hydra config AudioCraft's loader reads. The SEANet here is the real one (16 kHz, ratios 8 5 4 2, two LSTM layers,
16-bit messages, 32 detector features) with tiny widths.

The weights are random, with one calibration: the generator's last convolution is scaled so that
its mark sits about 20 dB under built-in signals (noise and tones), as a trained mark sits under the
audio, rather than drowning it. Random weights detect nothing meaningful: the tiny pair exercises
the real loading, conversion and serving paths; what the modules compute is checked against the
audioseal package's own modules on the same files (test/conformance).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml

from server.engine.watermark import SAMPLE_RATE, Detector, Generator, WatermarkConfig
from server.models.convert import keys
from server.models.convert.audioseal import (
    CONFIG_FILE,
    DETECTOR_FILE,
    DETECTOR_RULES,
    GENERATOR_FILE,
    GENERATOR_RULES,
    seanet_config,
    transposed_layers,
)
from server.tiny.audiocraft_export import COMPRESSION_CFG, as_transposed

NBITS = 16
OUTPUT_DIM = 32  # AudioSeal's detector width (audioseal's builder fixes it)
# audiocraft's config/model/watermark/default.yaml `seanet` is the SEANet of AudioGen's 16 kHz compression
# model (ratios 8 5 4 2, two LSTM layers, true skips): the tiny AudioGen's, with its widths (dimension 16,
# 4 filters), and AudioSeal's literal channels and causality where that one refers to its encodec section.
SEANET: dict[str, Any] = {**copy.deepcopy(COMPRESSION_CFG["seanet"]), "channels": 1, "causal": False}
MARK_RMS_RATIO = 0.1  # the calibrated mark's RMS against the audio's (-20 dB)
_CALIBRATION_S = 2.0


def xp_cfg() -> dict[str, Any]:
    """What AudioSeal's checkpoint script keeps of the training config (seanet, channels, dtype, rate)."""
    return {"seanet": copy.deepcopy(SEANET), "channels": 1, "dtype": "float32", "sample_rate": SAMPLE_RATE}


def base_yaml() -> dict[str, Any]:
    """base.yaml as audiocraft's watermark model config lays it out."""
    return {
        "audioseal": {"autoencoder": "seanet", "sample_rate": SAMPLE_RATE, "channels": 1, "nbits": NBITS},
        "seanet": copy.deepcopy(SEANET),
        "detector": {"output_dim": OUTPUT_DIM},
    }


def tiny_config() -> WatermarkConfig:
    return WatermarkConfig(seanet=seanet_config(xp_cfg(), "tiny"), nbits=NBITS, output_dim=OUTPUT_DIM)


def _signals(seed: int) -> torch.Tensor:
    """[batch, 1, samples]: noise at two levels and tones, the calibration's audio."""
    n = int(_CALIBRATION_S * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    gen = torch.Generator().manual_seed(seed)
    rows = [0.1 * torch.randn(n, generator=gen), 0.3 * torch.randn(n, generator=gen)]
    rows += [0.3 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 1000.0, 3100.0)]
    rows.append(0.2 * torch.sin(2 * torch.pi * 440.0 * t) + 0.05 * torch.randn(n, generator=gen))
    return torch.stack(rows)[:, None, :]


def _messages(batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 2, (batch, NBITS), generator=gen)


def _calibrate(generator: Generator, seed: int) -> None:
    audio = _signals(seed)
    with torch.no_grad():
        last = generator.decoder.layers[-1].conv
        mark = generator(audio, _messages(audio.shape[0], seed))  # its level: the last layer is linear
        scale = MARK_RMS_RATIO / float((mark.pow(2).mean() / audio.pow(2).mean()).sqrt())
        last.weight.mul_(scale)
        last.bias.mul_(scale)


def _published(module: torch.nn.Module, rules) -> dict[str, torch.Tensor]:
    """Module state -> the checkpoint's names (separate storage per tensor, as a saved state dict has)."""
    transposed = transposed_layers(module)
    state = keys.unmap_state(module.state_dict(), rules)
    return {as_transposed(name, transposed): t.detach().clone().contiguous() for name, t in state.items()}


def save_files(out: Path, seed: int) -> None:
    """generator_base.pth, detector_base.pth and base.yaml of a tiny AudioSeal into `out`."""
    config = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator, detector = Generator(config).eval(), Detector(config).eval()
    _calibrate(generator, seed)
    for module, rules, file in (
        (generator, GENERATOR_RULES, GENERATOR_FILE),
        (detector, DETECTOR_RULES, DETECTOR_FILE),
    ):
        torch.save({"xp.cfg": xp_cfg(), "model": _published(module, rules)}, out / file)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(base_yaml(), sort_keys=True))
