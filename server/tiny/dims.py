"""What a tiny checkpoint is: the kinds written, their dims, and the seed of each model.

Structure and framing are the released checkpoints'; only the widths are tiny. The same name and
seed always give the same weights (`model_seed`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from lib.catalogue import ModelSpec

# demucs: server/tiny/demucs.py
SUPPORTED_KINDS = (
    "musicgen",
    "musicgen-melody",
    "musicgen-style",
    "audiogen",
    "magnet",
    "encodec",
    "audioseal",
    "mbd",
    "demucs",
)

# The dims of every tiny checkpoint. Structure and framing are the real ones; widths are tiny.
# num_codebooks (4, or 8 for stereo) and the decoder's audio_channels come from the catalogue.
TINY: dict[str, dict[str, Any]] = {
    "text_encoder": {  # T5; vocab_size = the tiny tokenizer's size
        "d_model": 32,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "d_kv": 8,
    },
    "audio_encoder": {  # EnCodec 32 kHz: hop 8*5*4*4 = 640 -> 50 Hz; 2.2 kbps -> 4 quantizers
        "sampling_rate": 32000,
        "audio_channels": 1,  # also for stereo models (two mono passes)
        "upsampling_ratios": [8, 5, 4, 4],
        "target_bandwidths": [2.2],
        "codebook_size": 2048,
        "codebook_dim": 16,
        "hidden_size": 16,
        "num_filters": 4,
        "num_lstm_layers": 1,
        "num_residual_layers": 1,
        "norm_type": "weight_norm",
        "use_causal_conv": False,
        "use_conv_shortcut": False,
        "normalize": False,
        "pad_mode": "reflect",
    },
    "decoder": {
        "vocab_size": 2048,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_dim": 64,
        "max_position_embeddings": 2048,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
    },
    "melody": {"num_chroma": 12, "chroma_length": 235},
    "generation": {  # as in the released repos' generation_config.json
        "do_sample": True,
        "guidance_scale": 3.0,
        "max_length": 1500,
        "top_k": 250,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
        "decoder_start_token_id": 2048,
    },
    "tokenizer": {"max_pieces": 1000, "extra_ids": 100, "model_max_length": 512},
}


def model_seed(name: str, seed: int = 0) -> int:
    """The torch seed of one tiny model: a stable hash of its name and the run's seed."""
    digest = hashlib.sha256(f"{name}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_supported(spec: ModelSpec) -> None:
    if spec.kind not in SUPPORTED_KINDS:
        raise ValueError(
            f"no tiny checkpoint for {spec.name} yet (kind {spec.kind!r}); "
            f"supported kinds: {', '.join(SUPPORTED_KINDS)}"
        )
