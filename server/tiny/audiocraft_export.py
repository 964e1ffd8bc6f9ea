"""Tiny random-weight models in audiocraft's export format, written without the audiocraft package.

The weights are drawn for the transformers modules of the target shape, then renamed to audiocraft's
keys by the same rules the converter reads (server/models/convert/keys.py, run backwards), and saved
as audiocraft saves them: `state_dict.bin` = {'best_state', 'xp.cfg'} and `compression_state_dict.bin`
likewise. The xp.cfg holds the Hydra keys the builders read, with OmegaConf references left
unresolved as `OmegaConf.to_yaml` leaves them. test/conformance checks these rules against the real
package.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml

from server.models.convert import keys, xpcfg
from server.models.convert.audiocraft_export import COMPRESSION_FILE, LM_FILE

# The LM part of an AudioGen xp.cfg (config/model/lm/audiogen_lm.yaml and its defaults), tiny widths.
LM_CFG: dict[str, Any] = {
    "device": "cpu",
    "dtype": "float32",
    "sample_rate": 16000,
    "channels": 1,
    "solver": "audiogen",
    "lm_model": "transformer_lm",
    "dataset": {"segment_duration": 10},
    "classifier_free_guidance": {"training_dropout": 0.1, "inference_coef": 3.0},
    "attribute_dropout": {},
    "codebooks_pattern": {
        "modeling": "delay",
        "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0},
    },
    "transformer_lm": {
        "dim": 64,  # not the tiny T5's width: MusicGen has a text projection only when they differ
        "num_heads": 4,
        "num_layers": 2,
        "hidden_scale": 2,
        "n_q": 4,
        "card": 2048,
        "dropout": 0.0,
        "emb_lr": None,
        "activation": "gelu",
        "norm_first": True,
        "bias_ff": False,
        "bias_attn": False,
        "bias_proj": False,
        "past_context": None,
        "causal": True,
        "custom": False,
        "memory_efficient": True,
        "attention_as_float32": False,
        "layer_scale": None,
        "positional_embedding": "sin",
        "xpos": False,
        "checkpointing": "none",
        "weight_init": "gaussian",
        "depthwise_init": "current",
        "zero_bias_init": True,
        "norm": "layer_norm",
        "cross_attention": False,
        "qk_layer_norm": False,
        "qk_layer_norm_cross": False,
        "attention_dropout": None,
        "kv_repeat": 1,
        "two_step_cfg": False,
    },
    "fuser": {
        "cross_attention_pos_emb": False,
        "cross_attention_pos_emb_scale": 1,
        "sum": [],
        "prepend": [],
        "cross": ["description"],
        "input_interpolate": [],
    },
    "conditioners": {
        "description": {
            "model": "t5",
            "t5": {"name": "t5-large", "finetune": False, "word_dropout": 0.0, "normalize_text": False},
        }
    },
}

# The compression model's xp.cfg (config/model/encodec/encodec_large_nq4_s320.yaml over its default):
# 16 kHz, ratios 8*5*4*2 = 320 -> 50 Hz, 4 codebooks of 2048; tiny widths.
COMPRESSION_CFG: dict[str, Any] = {
    "device": "cpu",
    "dtype": "float32",
    "sample_rate": 16000,
    "channels": 1,
    "compression_model": "encodec",
    "encodec": {
        "autoencoder": "seanet",
        "quantizer": "rvq",
        "sample_rate": "${sample_rate}",
        "channels": "${channels}",
        "causal": False,
        "renormalize": False,
    },
    "seanet": {
        "dimension": 16,
        "channels": "${channels}",
        "causal": "${encodec.causal}",
        "n_filters": 4,
        "n_residual_layers": 1,
        "ratios": [8, 5, 4, 2],
        "activation": "ELU",
        "activation_params": {"alpha": 1.0},
        "norm": "weight_norm",
        "norm_params": {},
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 7,
        "dilation_base": 2,
        "pad_mode": "constant",
        "true_skip": True,
        "compress": 2,
        "lstm": 2,
        "disable_norm_outer_blocks": 0,
        "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
        "encoder": {},
    },
    "rvq": {
        "n_q": 4,
        "q_dropout": False,
        "bins": 2048,
        "decay": 0.99,
        "kmeans_init": True,
        "kmeans_iters": 50,
        "threshold_ema_dead_code": 2,
        "orthogonal_reg_weight": 0.0,
        "orthogonal_reg_active_codes_only": False,
    },
}


def magnet_cfgs(segment_s: float, audio: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(LM, compression) xp.cfg of a tiny MAGNeT: the LM part of audiocraft's magnet solver configs
    (lm_model transformer_lm_magnet, non-causal, spans of 3, codebooks > 0 attending 5 frames either
    way) over AudioGen's tiny shape; text to music at 32 kHz on T5-base, text to sound at 16 kHz on
    T5-large."""
    lm = copy.deepcopy(LM_CFG)
    codec = copy.deepcopy(COMPRESSION_CFG)
    rate = 16000 if audio else 32000
    lm |= {"solver": "magnet", "lm_model": "transformer_lm_magnet", "sample_rate": rate}
    lm["dataset"] = {"segment_duration": segment_s}
    lm["masking"] = {"span_len": 3}
    lm["codebooks_pattern"] = {"modeling": "parallel", "parallel": {}}
    lm["transformer_lm"] |= {"causal": False, "subcodes_context": 5}
    lm["conditioners"]["description"]["t5"]["name"] = "t5-large" if audio else "t5-base"
    codec["sample_rate"] = rate
    if not audio:
        codec["seanet"]["ratios"] = [8, 5, 4, 4]
    return lm, codec


def _random_target_state(
    lm_cfg: dict[str, Any], codec_cfg: dict[str, Any], text_width: int, seed: int, codebooks: bool = False
):
    """Random weights for the decoder, the text projection and EnCodec, under their transformers names.
    codebooks: draw EnCodec's codebooks too (transformers starts them at zero, so every code decodes
    to the same audio until they are drawn)."""
    from transformers import (
        EncodecConfig,
        EncodecModel,
        MusicgenDecoderConfig,
        MusicgenForCausalLM,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForCausalLM,
    )

    settings = xpcfg.lm_settings(xpcfg.parse(yaml.safe_dump(lm_cfg)))
    codec_kwargs = xpcfg.encodec_config_kwargs(xpcfg.parse(yaml.safe_dump(codec_cfg)))
    # A model that prepends its conditioning (melody, style) has no cross-attention.
    prefixed = settings.num_chroma is not None
    config_cls = MusicgenMelodyDecoderConfig if prefixed else MusicgenDecoderConfig
    decoder_cls = MusicgenMelodyForCausalLM if prefixed else MusicgenForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = decoder_cls(config_cls(**xpcfg.decoder_config_kwargs(settings)))
        proj = torch.nn.Linear(text_width, settings.dim)
        codec = EncodecModel(EncodecConfig(**codec_kwargs))
        if codebooks:
            with torch.no_grad():
                for layer in codec.quantizer.layers:
                    layer.codebook.embed.normal_()
    state = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    state |= {f"enc_to_dec_proj.{k}": v for k, v in proj.state_dict().items()}
    state |= {f"audio_encoder.{k}": v for k, v in codec.state_dict().items()}
    # transformers calls every decoder convolution `conv`; audiocraft calls the upsampling ones
    # `convtr.convtr`, so the way back needs to know which layers those are.
    transposed = {i for i, layer in enumerate(codec.decoder.layers) if type(layer).__name__ == "EncodecConvTranspose1d"}
    return state, transposed


def save_export(
    out: Path,
    seed: int,
    text_width: int,
    lm_cfg: dict[str, Any] | None = None,
    codec_cfg: dict[str, Any] | None = None,
    extra_lm_state: dict[str, torch.Tensor] | None = None,
    codebooks: bool = False,
) -> None:
    """Write state_dict.bin and compression_state_dict.bin for a tiny model into `out`.
    extra_lm_state: more LM tensors under audiocraft's names (a style model's conditioner);
    codebooks: EnCodec's codebooks drawn (_random_target_state)."""
    lm_cfg = copy.deepcopy(lm_cfg or LM_CFG)
    codec_cfg = copy.deepcopy(codec_cfg or COMPRESSION_CFG)
    state, transposed = _random_target_state(lm_cfg, codec_cfg, text_width, seed, codebooks)
    lm_state = keys.unmap_state(
        {k: v for k, v in state.items() if not k.startswith("audio_encoder.")}, keys.LM_RULES, keys.IN_PROJ_RULES
    )
    codec_state = keys.unmap_state(state, keys.CODEC_RULES, prefix="audio_encoder.")
    codec_state = {as_transposed(k, transposed): v for k, v in codec_state.items()}
    lm_state |= extra_lm_state or {}
    # Separate storage per tensor (audiocraft's state dicts hold no views of each other).
    lm_state = {k: v.detach().clone().contiguous() for k, v in lm_state.items()}
    codec_state = {k: v.detach().clone().contiguous() for k, v in codec_state.items()}
    torch.save({"best_state": lm_state, "xp.cfg": yaml.safe_dump(lm_cfg, sort_keys=True)}, out / LM_FILE)
    torch.save({"best_state": codec_state, "xp.cfg": yaml.safe_dump(codec_cfg, sort_keys=True)}, out / COMPRESSION_FILE)


def as_transposed(name: str, transposed: set[int]) -> str:
    parts = name.split(".")  # decoder.model.<i>.conv.conv.<param>
    if parts[:2] == ["decoder", "model"] and int(parts[2]) in transposed and parts[3:5] == ["conv", "conv"]:
        return ".".join(parts[:3] + ["convtr", "convtr"] + parts[5:])
    return name
