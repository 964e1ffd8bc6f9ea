"""MERT (m-a-p/MERT-v1-95M), the style conditioner's feature extractor, as transformers' HubertModel.

The repo's config.json is a `MERTConfig` whose code ships in the repo (trust_remote_code); that code
is never run here. MERTModel is HubertModel with its own feature projection (an optional LayerNorm,
which HubertConfig has as feat_proj_layer_norm) and three extensions: CQT features concatenated
(feature_extractor_cqt), DeepNorm residual scaling (deepnorm) and relaxed attention (attention_relax).
With none of them on (MERT-v1-95M) the two compute the same thing, so the config maps onto a
HubertConfig; any of them on is refused by name. The weights map
one to one (the positional convolution's old weight-norm names renamed), strictly: every tensor of
HubertModel present with its shape, nothing left over.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.models.convert.xpcfg import ConversionError

MODEL_TYPE = "mert_model"
# MERT's own config fields, and the value each must have for HubertModel to compute the same thing.
_MERT_ONLY = {"feature_extractor_cqt": False, "deepnorm": False}
# Fields that change nothing HubertModel computes: bookkeeping, the CQT's size when it is off, and
# older transformers' training switches.
_IGNORED = {"feature_extractor_cqt_bins", "sample_rate", "auto_map", "architectures", "model_type",
            "transformers_version", "torch_dtype", "dtype", "gradient_checkpointing", "tokenizer_class"}  # fmt: skip
# Old weight norm (weight_g, weight_v) -> the parametrization HubertPositionalConvEmbedding has.
_RENAMES = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hubert_config(config: dict):
    """The HubertConfig that computes what this MERTConfig describes."""
    from transformers import HubertConfig

    if config.get("model_type") != MODEL_TYPE:
        raise ConversionError(f"config.json model_type = {config.get('model_type')!r}: a MERT repo has {MODEL_TYPE!r}")
    for key, wanted in _MERT_ONLY.items():
        if bool(config.get(key, wanted)) != wanted:
            raise ConversionError(f"MERT config {key} = {config[key]!r}: only {wanted!r} converts into HubertModel")
    relax = float(config.get("attention_relax", -1.0))
    if relax > 0:
        raise ConversionError(f"MERT config attention_relax = {relax}: relaxed attention does not convert")
    if config.get("do_stable_layer_norm"):
        raise ConversionError("MERT config do_stable_layer_norm = true: MERT's post-norm encoder only converts")
    # Every setting HubertModel reads is a HubertConfig field; the rest of a config (MERT's own, checked
    # above, and older transformers' generic fields such as add_cross_attention) changes nothing it computes.
    known = set(HubertConfig().to_dict()) - _IGNORED
    kwargs = {k: v for k, v in config.items() if k in known and not k.startswith("_")}
    return HubertConfig(**kwargs)


def read_weights(snapshot: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = snapshot / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        try:  # weights_only: a plain state dict, nothing that needs arbitrary unpickling
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConversionError(f"{name} in {snapshot} is not a readable state dict ({exc})") from exc
        if not isinstance(state, dict):
            raise ConversionError(f"{name} in {snapshot}: expected a state dict")
        return state
    raise ConversionError(f"{snapshot} has no MERT weights ({' or '.join(WEIGHT_FILES)})")


def _renamed(name: str) -> str:
    for old, new in _RENAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def load_mert(snapshot: Path):
    """HubertModel (float32, eval) over a MERT repo's weights, strictly."""
    from transformers import HubertModel

    snapshot = Path(snapshot)
    config = hubert_config(json.loads((snapshot / "config.json").read_text()))
    from server.models.convert.audiocraft_export import check_against  # (it imports this module)

    original = {k.removeprefix("mert_model."): v for k, v in read_weights(snapshot).items()}
    state = {_renamed(k): v for k, v in original.items()}
    with torch.device("meta"):
        model = HubertModel(config)
    # The names as the repo has them, in the errors.
    check_against(model, state, {_renamed(k): k for k in original}, name_of=lambda n: n)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()
