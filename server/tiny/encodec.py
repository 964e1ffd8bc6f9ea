"""EnCodec configurations: the released checkpoints' shapes, and tiny ones with the same framing.

`real_config` gives the configuration of facebook/encodec_24khz, encodec_48khz and
encodec_32khz (transformers' EncodecConfig defaults are the 24 kHz model; the other two differ
where the released config.json files do). `tiny_config` keeps everything that decides framing
and the container (rate, channels, hop, causal or not, norm type, normalisation, segments,
codebook size, bandwidths and so the number of codebooks) and shrinks only the widths.
Benchmarks use the real shapes with random weights; tests and offline users the tiny ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lib.catalogue import ModelSpec
from server.tiny.dims import model_seed
from server.tiny.weight_norm import legacy_weight_norm_names

# As in the released config.json files (beyond EncodecConfig's defaults, which are encodec_24khz).
REAL: dict[str, dict[str, Any]] = {
    "encodec-24khz": {},
    "encodec-48khz": {
        "sampling_rate": 48000,
        "audio_channels": 2,
        "chunk_length_s": 1.0,
        "overlap": 0.01,
        "normalize": True,
        "norm_type": "time_group_norm",
        "use_causal_conv": False,
        "target_bandwidths": [3.0, 6.0, 12.0, 24.0],
    },
    "encodec-32khz": {
        "sampling_rate": 32000,
        "upsampling_ratios": [8, 5, 4, 4],
        "num_filters": 64,
        "codebook_size": 2048,
        "target_bandwidths": [2.2],
        "use_causal_conv": False,
        "use_conv_shortcut": False,
    },
}

# Tiny widths; framing and structure stay as released (two LSTM layers included).
TINY_WIDTHS: dict[str, Any] = {"hidden_size": 16, "codebook_dim": 16, "num_filters": 4}

# Scale of the random codebook vectors: about the size of the tiny encoder's outputs, so that
# codes spread over the codebook instead of all landing on one entry.
CODEBOOK_STD = 0.5


def real_config(name: str):
    from transformers import EncodecConfig

    return EncodecConfig(**REAL[name])


def tiny_config(name: str):
    from transformers import EncodecConfig

    return EncodecConfig(**{**REAL[name], **TINY_WIDTHS})


def build_model(config: Any, seed: int):
    """A random-weight EncodecModel in eval mode. The global torch RNG is left as it was.

    transformers initialises codebooks to zeros (they are learnt from data); random ones make
    the codes vary as they do with real weights.
    """
    import torch
    from transformers import EncodecModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncodecModel(config)
        with torch.no_grad():
            for layer in model.quantizer.layers:
                book = layer.codebook
                book.embed.copy_(torch.randn_like(book.embed) * CODEBOOK_STD)
                book.embed_avg.copy_(book.embed)
                book.cluster_size.fill_(1.0)
    return model.eval()


def preprocessor_config(spec: ModelSpec, config: Any) -> dict[str, Any]:
    """preprocessor_config.json as the released EnCodec repos have it."""
    from transformers import EncodecFeatureExtractor

    fe = EncodecFeatureExtractor(
        feature_size=int(config.audio_channels),
        sampling_rate=int(config.sampling_rate),
        chunk_length_s=config.chunk_length_s,
        overlap=config.overlap,
        padding_side="right",
    )
    return fe.to_dict()


def save_files(spec: ModelSpec, out: Path, seed: int) -> None:
    """A tiny EnCodec repo (kind "encodec"): config.json, model.safetensors, preprocessor_config.json."""
    config = tiny_config(spec.name)
    model = build_model(config, model_seed(spec.name, seed))
    model.save_pretrained(out)
    if config.norm_type == "weight_norm":
        legacy_weight_norm_names(out / "model.safetensors")
    pre = json.dumps(preprocessor_config(spec, config), indent=2, sort_keys=True) + "\n"
    (out / "preprocessor_config.json").write_text(pre)
