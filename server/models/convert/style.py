"""MusicGen-Style's style conditioner, out of an audiocraft export: its settings (xp.cfg
conditioners.self_wav.style) and its weights (condition_provider.conditioners.self_wav.*), checked
strictly and written beside the converted MusicGen folder as `style.safetensors` + `style.json`.

Its projection to the decoder's width (output_proj) goes into the MusicgenMelody class as the
melody model's does (audio_enc_to_dec_proj): a style model prepends its tokens and the text, as
AudioCraft's style2music fuser does. MERT, which audiocraft loads by name, comes from its own repo
(server/models/convert/mert.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from lib.schemas import STYLE_EXCERPT_MAX_S
from server.engine.style import StyleConditioner, StyleSettings, token_count
from server.models.convert.xpcfg import ConversionError, lookup

PREFIX = "condition_provider.conditioners.self_wav."
STYLE_WEIGHTS = "style.safetensors"
STYLE_SETTINGS = "style.json"
MERT_DIR = "mert"

# transformer_scale -> (d_model, num_heads, num_layers), as StyleConditioner builds it.
_SCALES = {"xsmall": (256, 8, 4), "default": (512, 8, 8), "large": (1024, 16, 24), "none": (512, 0, 0)}
# Keys of the style section that change nothing at inference (training, or encodec feature extraction).
_TRAINING_ONLY = {
    "q_dropout", "varying_lengths", "compute_mask", "num_codebooks_lm", "ds_rate_compression",
    "rvq_threshold_ema_dead_code", "encodec_checkpoint", "encodec_n_q",
}  # fmt: skip
_READ = {"model_name", "transformer_scale", "sample_rate", "length", "ds_factor", "n_q_out", "eval_q", "bins",
         "batch_norm", "use_middle_of_segment"}  # fmt: skip
# The quantizer's training state, kept in the export and unused at inference.
_DROPPED = re.compile(
    r"^rvq\.vq\.layers\.\d+\._codebook\.(inited|cluster_size|embed_avg)$|^batch_norm\.num_batches_tracked$"
)


def is_style(cfg: dict[str, Any]) -> bool:
    conditioners = cfg.get("conditioners") or {}
    return isinstance(conditioners, dict) and (conditioners.get("self_wav") or {}).get("model") == "style"


def style_settings(cfg: dict[str, Any]) -> StyleSettings:
    """The conditioner's settings, after checking what the engine's StyleConditioner computes."""
    section = dict(lookup(cfg, "conditioners.self_wav.style"))
    unknown = set(section) - _READ - _TRAINING_ONLY
    if unknown:
        raise ConversionError(f"xp.cfg conditioners.self_wav.style.{sorted(unknown)[0]}: does not convert")
    name = section.get("model_name")
    if name != "mert":
        raise ConversionError(
            f"xp.cfg conditioners.self_wav.style.model_name = {name!r}: only the MERT feature extractor converts"
        )
    scale = section.get("transformer_scale", "default")
    if scale not in _SCALES:
        raise ConversionError(
            f"xp.cfg conditioners.self_wav.style.transformer_scale = {scale!r}: not one of {sorted(_SCALES)}"
        )
    dim, heads, layers = _SCALES[scale]
    n_q_out, eval_q = int(section.get("n_q_out", 6)), int(section.get("eval_q", 3))
    if n_q_out < 1:  # no RVQ at all: AudioCraft's n_q_out 0, never published
        raise ConversionError(f"xp.cfg conditioners.self_wav.style.n_q_out = {n_q_out}: a style model quantizes")
    if not 1 <= eval_q <= n_q_out:
        raise ConversionError(f"xp.cfg conditioners.self_wav.style.eval_q = {eval_q}: it must be within 1..{n_q_out}")
    rate = int(lookup(cfg, "sample_rate"))
    if int(section.get("sample_rate", rate)) != rate:
        raise ConversionError(f"xp.cfg conditioners.self_wav.style.sample_rate differs from sample_rate ({rate})")
    return StyleSettings(
        dim=dim,
        num_heads=heads,
        num_layers=layers,
        n_q_out=n_q_out,
        eval_q=eval_q,
        bins=int(section.get("bins", 1024)),
        ds_factor=int(section.get("ds_factor", 15)),
        excerpt_s=float(section.get("length", 3.0)),
        middle=bool(section.get("use_middle_of_segment", False)),
        batch_norm=bool(section.get("batch_norm", True)),
        sample_rate=rate,
    )


def prefix_length(settings: StyleSettings) -> int:
    """The most style tokens a request makes (the longest excerpt): the converted config's chroma_length."""
    return token_count(settings, STYLE_EXCERPT_MAX_S)


def _engine_name(name: str) -> str:
    """An export key (after PREFIX) -> the engine's StyleConditioner name."""
    if name in ("batch_norm.running_mean", "batch_norm.running_var"):
        return name.removeprefix("batch_norm.")
    return name


def split_state(lm_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the LM's state with the conditioner's own weights taken out, those weights under the engine's
    names with the RVQ codebooks stacked). The projection (output_proj) stays with the LM."""
    lm, style, books = {}, {}, {}
    for name, tensor in lm_state.items():
        if not name.startswith(PREFIX) or name.startswith(PREFIX + "output_proj."):
            lm[name] = tensor
            continue
        rest = name[len(PREFIX) :]
        if _DROPPED.match(rest):
            continue
        m = re.match(r"^rvq\.vq\.layers\.(\d+)\._codebook\.embed$", rest)
        if m:
            books[int(m.group(1))] = tensor
        else:
            style[_engine_name(rest)] = tensor
    if books:
        if sorted(books) != list(range(len(books))):
            raise ConversionError(f"{PREFIX}rvq.vq.layers: codebooks {sorted(books)} are not 0..{len(books) - 1}")
        style["codebooks"] = torch.stack([books[i] for i in range(len(books))])
    return lm, style


def check_style(settings: StyleSettings, state: dict[str, torch.Tensor]) -> StyleConditioner:
    """The conditioner with `state` loaded: every tensor present with its shape, nothing left over
    (errors name the export's key)."""
    with torch.device("meta"):
        model = StyleConditioner(settings)
    from server.models.convert.audiocraft_export import check_against  # (it imports this module)

    def export_name(name: str) -> str:
        if name == "codebooks":
            return f"{PREFIX}rvq.vq.layers.*._codebook.embed"
        if name in ("running_mean", "running_var"):
            return f"{PREFIX}batch_norm.{name}"
        return PREFIX + name

    check_against(model, state, {n: export_name(n) for n in state}, name_of=export_name)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True, assign=True)
    return model


def write_style(out_dir: Path, settings: StyleSettings, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    check_style(settings, state)
    save_file({k: v.to(torch.float32).contiguous() for k, v in state.items()}, str(out_dir / STYLE_WEIGHTS))
    (out_dir / STYLE_SETTINGS).write_text(json.dumps(settings.as_dict(), indent=1) + "\n")


def load_style(folder: Path) -> StyleConditioner:
    """The conditioner written by write_style (its MERT is set by the loader)."""
    from safetensors.torch import load_file

    settings = StyleSettings(**json.loads((folder / STYLE_SETTINGS).read_text()))
    model = check_style(settings, load_file(str(folder / STYLE_WEIGHTS)))
    return model.eval()
