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
audioseal package's own modules on the same files (test/conformance). `train_steps` trains the pair
briefly instead (train_to_detect), so that its detector finds its own mark: the end-to-end test of
marking and detection (test/integration/test_watermark_trained.py).
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


_TRAIN_SAMPLES = 8000  # half a second at 16 kHz per training example
_TRAIN_BATCH = 4
_TRAIN_MAX_RMS_RATIO = 0.2  # the loudest mark training lets through (-14 dB), as AudioSeal's perceptual losses bound it
_TRAIN_LR = 1e-3
_TRAIN_CUTOFF = 0.35  # of the sample rate: 5.6 kHz


def _training_audio(gen: torch.Generator) -> torch.Tensor:
    """[batch, 1, samples]: a tone of random pitch and level in noise, per row."""
    t = torch.arange(_TRAIN_SAMPLES) / SAMPLE_RATE
    rows = []
    for _ in range(_TRAIN_BATCH):
        pitch_hz = 100.0 + 3000.0 * float(torch.rand(1, generator=gen))
        level = 0.05 + 0.3 * float(torch.rand(1, generator=gen))
        noise = float(torch.rand(1, generator=gen))
        tone = torch.sin(2 * torch.pi * pitch_hz * t)
        rows.append(level * (tone + noise * torch.randn(_TRAIN_SAMPLES, generator=gen)))
    return torch.stack(rows)[:, None, :]


def train_to_detect(generator: Generator, detector: Detector, steps: int, seed: int) -> None:
    """Train the pair together for `steps` steps, AudioSeal's way in miniature: the detector learns
    each sample's "marked or not" on audio with and without the generator's mark, while a hinge keeps
    the mark under _TRAIN_MAX_RMS_RATIO of the audio. Random weights detect nothing; about 100 steps
    of this make a tiny pair whose detector finds its own generator's mark and not clean audio (the
    message bits are not trained: they need far longer)."""
    import julius
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed + 2)
    params = list(generator.parameters()) + list(detector.parameters())
    optimizer = torch.optim.Adam(params, lr=_TRAIN_LR)
    generator.train(), detector.train()
    marked_label = torch.ones(_TRAIN_BATCH, _TRAIN_SAMPLES, dtype=torch.long)
    for _ in range(steps):
        audio = _training_audio(gen)
        bits = torch.randint(0, 2, (_TRAIN_BATCH, NBITS), generator=gen)
        mark = generator(audio, bits)
        # Heard through a low-pass, as AudioSeal trains through filtering: a mark near 8 kHz would not
        # outlive the service's resampling to and from the audio's own rate.
        heard = julius.lowpass_filter(audio + mark, _TRAIN_CUTOFF)
        loss = F.cross_entropy(_detector_logits(detector, heard), marked_label)
        clean = julius.lowpass_filter(audio, _TRAIN_CUTOFF)
        loss = loss + F.cross_entropy(_detector_logits(detector, clean), torch.zeros_like(marked_label))
        loudness = (mark.pow(2).mean() / audio.pow(2).mean()).sqrt()
        loss = loss + F.relu(loudness - _TRAIN_MAX_RMS_RATIO)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator.eval(), detector.eval()


def _detector_logits(detector: Detector, audio: torch.Tensor) -> torch.Tensor:
    """The detector's two "marked or not" logits per sample (what Detector.forward takes the softmax of)."""
    features = detector.upsample(detector.encoder(audio))[..., : audio.shape[-1]]
    return detector.head(features)[:, :2, :]


def _published(module: torch.nn.Module, rules) -> dict[str, torch.Tensor]:
    """Module state -> the checkpoint's names (separate storage per tensor, as a saved state dict has)."""
    transposed = transposed_layers(module)
    state = keys.unmap_state(module.state_dict(), rules)
    return {as_transposed(name, transposed): t.detach().clone().contiguous() for name, t in state.items()}


def save_files(out: Path, seed: int, train_steps: int = 0) -> None:
    """generator_base.pth, detector_base.pth and base.yaml of a tiny AudioSeal into `out`; with
    train_steps, a pair trained to detect its own mark (train_to_detect), else random weights."""
    config = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator, detector = Generator(config).eval(), Detector(config).eval()
    _calibrate(generator, seed)
    if train_steps:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            train_to_detect(generator, detector, train_steps, seed)
    for module, rules, file in (
        (generator, GENERATOR_RULES, GENERATOR_FILE),
        (detector, DETECTOR_RULES, DETECTOR_FILE),
    ):
        torch.save({"xp.cfg": xp_cfg(), "model": _published(module, rules)}, out / file)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(base_yaml(), sort_keys=True))
