"""A tiny MusicGen-Style: its audiocraft export (the style2music conditioner config, the style
conditioner's weights under audiocraft's names) and a tiny MERT repo in m-a-p/MERT-v1-95M's layout
(a MERTConfig config.json, pytorch_model.bin with the old weight-norm names)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from server.models.convert.style import PREFIX, style_settings
from server.tiny.audiocraft_export import COMPRESSION_CFG, LM_CFG, save_export

MERT_REPO = "m-a-p/MERT-v1-95M"
# The style section of audiocraft's config/conditioner/style2music.yaml, the smallest transformer scale
# and fewer bins (the real model: transformer_scale default, bins 1024).
STYLE_SECTION: dict[str, Any] = {
    "model_name": "mert", "transformer_scale": "xsmall", "sample_rate": "${sample_rate}",
    "encodec_checkpoint": "//pretrained/facebook/encodec_32khz", "encodec_n_q": 3, "length": 3.0,
    "ds_factor": 15, "n_q_out": 6, "eval_q": 3, "q_dropout": True, "bins": 64, "varying_lengths": [1.5, 4.5],
    "batch_norm": True, "compute_mask": True, "num_codebooks_lm": "${transformer_lm.n_q}",
    "ds_rate_compression": 640, "use_middle_of_segment": False, "rvq_threshold_ema_dead_code": 0.1,
}  # fmt: skip
# MERT-v1-95M's structure (7 convolutions: 24 kHz -> 75 Hz, a post-norm encoder) at tiny widths.
TINY_MERT: dict[str, Any] = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
    "conv_dim": [16] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "mask_time_prob": 0.05,
    "do_stable_layer_norm": False,
}  # fmt: skip
_MERT_FIELDS = {
    "model_type": "mert_model", "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "attention_relax": -1.0, "deepnorm": False, "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336,
    "sample_rate": 24000,
}  # fmt: skip


def style_cfgs() -> tuple[dict[str, Any], dict[str, Any]]:
    """(LM, compression) xp.cfg of a tiny MusicGen-Style: musicgen_style_32khz over the tiny LM."""
    lm, codec = copy.deepcopy(LM_CFG), copy.deepcopy(COMPRESSION_CFG)
    lm |= {"solver": "musicgen", "sample_rate": 32000}
    lm["dataset"] = {"segment_duration": 30}
    lm["fuser"] |= {"prepend": ["self_wav", "description"], "cross": []}
    lm["conditioners"] = {
        "self_wav": {"model": "style", "style": dict(STYLE_SECTION)},
        "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.2,
                                              "normalize_text": False}},
    }  # fmt: skip
    codec["sample_rate"] = 32000
    codec["seanet"]["ratios"] = [8, 5, 4, 4]
    return lm, codec


def _resolved(cfg: dict[str, Any]) -> dict[str, Any]:
    import yaml

    from server.models.convert import xpcfg

    return xpcfg.parse(yaml.safe_dump(cfg))


def random_style_state(lm_cfg: dict[str, Any], lm_dim: int, mert_width: int, seed: int) -> dict[str, torch.Tensor]:
    """Random conditioner weights under audiocraft's names (its training buffers included)."""
    from dataclasses import replace

    from server.engine.style import StyleConditioner

    settings = replace(style_settings(_resolved(lm_cfg)), mert_width=mert_width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = StyleConditioner(settings)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("in_proj_weight"):  # an empty tensor until drawn (nn.Linear draws its own)
                    torch.nn.init.xavier_uniform_(p)
            module.codebooks.normal_()
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            for name, p in module.named_parameters():
                if "norm" in name:
                    p.add_(0.2 * torch.randn_like(p))
        proj = torch.nn.Linear(settings.dim, lm_dim)
    state = {}
    for name, tensor in module.state_dict().items():
        if name == "codebooks":
            for i, book in enumerate(tensor):
                layer = f"{PREFIX}rvq.vq.layers.{i}._codebook."
                state |= {layer + "embed": book, layer + "embed_avg": book.clone(), layer + "inited": torch.ones(1)}
                state[layer + "cluster_size"] = torch.ones(book.shape[0])
        elif name in ("running_mean", "running_var"):
            state[f"{PREFIX}batch_norm.{name}"] = tensor
        else:
            state[PREFIX + name] = tensor
    state[f"{PREFIX}batch_norm.num_batches_tracked"] = torch.tensor(1000)
    state |= {f"{PREFIX}output_proj.{k}": v for k, v in proj.state_dict().items()}
    return state


def save_files(out: Path, seed: int, text_width: int) -> None:
    lm_cfg, codec_cfg = style_cfgs()
    extra = random_style_state(lm_cfg, lm_cfg["transformer_lm"]["dim"], TINY_MERT["hidden_size"], seed + 1)
    # Codebooks drawn: the API tests tell styles apart by the audio their tokens decode to.
    save_export(out, seed, text_width, lm_cfg, codec_cfg, extra_lm_state=extra, codebooks=True)


def mert_config() -> dict[str, Any]:
    from transformers import HubertConfig

    config = HubertConfig(**TINY_MERT).to_dict()
    for key in ("transformers_version", "dtype", "torch_dtype"):
        config.pop(key, None)
    return config | _MERT_FIELDS


def save_mert(out: Path, seed: int) -> None:
    """A tiny MERT repo: config.json (a MERTConfig) and pytorch_model.bin, as MERT-v1-95M holds them."""
    from transformers import HubertConfig, HubertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig(**TINY_MERT))
    renames = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
    state = {}
    for name, tensor in model.state_dict().items():
        for new, old in renames.items():
            if name.endswith(new):
                name = name[: -len(new)] + old
        state[name] = tensor.detach().clone().contiguous()
    (out / "config.json").write_text(json.dumps(mert_config(), indent=2, sort_keys=True) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 24000,
    }, indent=2) + "\n")  # fmt: skip
    torch.save(state, out / "pytorch_model.bin")
