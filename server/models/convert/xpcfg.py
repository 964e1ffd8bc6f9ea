"""Reading the Hydra config (`xp.cfg`) audiocraft stores in its exports, and checking that the model it
describes is one the transformers MusicGen classes can represent exactly.

Only what changes the numbers is read; anything the MusicGen decoder or EncodecModel cannot do raises
ConversionError naming the config key, rather than converting into a model that computes something else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from lib.errors import Invalid


class ConversionError(Invalid, ValueError):
    """The export cannot be converted exactly; the message names the key or config entry."""

    code = "conversion_failed"


LM_MODELS = ("transformer_lm", "transformer_lm_magnet")
MAGNET_LM = "transformer_lm_magnet"

# T5Conditioner takes the text encoder's width from its name.
T5_WIDTHS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024}
T5_WIDTHS |= {"google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024}

_REF = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def parse(text: str) -> dict[str, Any]:
    """The YAML of an xp.cfg, with OmegaConf's `${a.b}` references (which `OmegaConf.to_yaml` keeps
    unresolved) replaced by the values they point to."""
    cfg = yaml.safe_load(text)
    if not isinstance(cfg, dict):
        raise ConversionError("xp.cfg is not a YAML mapping")
    return resolve_references(cfg)


def resolve_references(cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with OmegaConf's `${a.b}` references replaced by the values they point to."""

    def resolve(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, depth) for v in value]
        if isinstance(value, str) and (m := _REF.match(value)):
            if depth > 10:
                raise ConversionError(f"xp.cfg: reference loop at {value}")
            return resolve(lookup(cfg, m.group(1)), depth + 1)
        return value

    return resolve(cfg)


def lookup(cfg: dict[str, Any], path: str, default: Any = ...) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise ConversionError(f"xp.cfg has no {path}")
        node = node[part]
    return node


def _require(cfg: dict[str, Any], path: str, expected: Any, default: Any = ...) -> None:
    value = lookup(cfg, path, default)
    if value != expected:
        raise ConversionError(
            f"xp.cfg {path} = {value!r}: only {expected!r} converts exactly into the MusicGen decoder"
        )


@dataclass(frozen=True)
class LMSettings:
    dim: int
    num_heads: int
    num_layers: int
    ffn_dim: int
    n_q: int
    card: int
    t5_name: str
    t5_width: int
    cfg_coef: float
    segment_duration_s: float
    sample_rate: int
    channels: int
    positional_max_period: float
    num_chroma: int | None = None  # a melody model's chroma bins; None: a text-only MusicGen
    chroma_length: int | None = None  # its chroma prefix, in frames


def lm_settings(cfg: dict[str, Any]) -> LMSettings:
    """The LM's shape, after checking every setting that the transformers decoder hard-codes."""
    lm = lookup(cfg, "transformer_lm")
    lm_model = cfg.get("lm_model", "transformer_lm")
    if lm_model not in LM_MODELS:
        raise ConversionError(f"xp.cfg lm_model = {lm_model!r}: only {' and '.join(LM_MODELS)} convert")
    magnet = lm_model == MAGNET_LM
    for key, expected, default in [
        ("norm_first", True, ...),
        ("bias_ff", False, ...),
        ("bias_attn", False, ...),
        ("bias_proj", False, ...),
        ("activation", "gelu", ...),
        ("norm", "layer_norm", "layer_norm"),
        ("positional_embedding", "sin", "sin"),
        ("layer_scale", None, None),
        ("qk_layer_norm", False, False),
        ("qk_layer_norm_cross", False, False),
        ("kv_repeat", 1, 1),
        # MAGNeT attends both ways (its own masks, server/engine/magnet.py); MusicGen is causal.
        ("causal", not magnet, True),
        ("past_context", None, None),
        ("positional_scale", 1.0, 1.0),
    ]:
        _require(cfg, f"transformer_lm.{key}", expected, default)
    n_q = int(lm["n_q"])
    if not magnet:  # MAGNeT's decoding never reads the pattern: it fills one codebook at a time
        _require(cfg, "codebooks_pattern.modeling", "delay")
        _require(cfg, "codebooks_pattern.delay.delays", list(range(n_q)))
        _require(cfg, "codebooks_pattern.delay.flatten_first", 0, 0)
        _require(cfg, "codebooks_pattern.delay.empty_initial", 0, 0)
    conditioners = lookup(cfg, "conditioners")
    chroma = None
    if isinstance(conditioners, dict) and "self_wav" in conditioners:
        chroma = style_prefix(cfg) if (conditioners["self_wav"] or {}).get("model") == "style" else melody_settings(cfg)
    if chroma is None:
        # Text on cross-attention only (a melody model's prepended chroma and text: melody_settings).
        _require(cfg, "fuser.cross", ["description"])
        for key in ("prepend", "sum", "input_interpolate"):
            _require(cfg, f"fuser.{key}", [], [])
        if not isinstance(conditioners, dict) or set(conditioners) != {"description"}:
            raise ConversionError(f"xp.cfg conditioners = {sorted(conditioners or {})}: only [description] converts")
    _require(cfg, "fuser.cross_attention_pos_emb", False, False)
    _require(cfg, "conditioners.description.model", "t5")
    t5_name = str(lookup(cfg, "conditioners.description.t5.name"))
    if t5_name not in T5_WIDTHS:
        raise ConversionError(f"xp.cfg conditioners.description.t5.name = {t5_name!r} is not a T5 audiocraft knows")
    dim = int(lm["dim"])
    return LMSettings(
        dim=dim,
        num_heads=int(lm["num_heads"]),
        num_layers=int(lm["num_layers"]),
        ffn_dim=int(float(lm["hidden_scale"]) * dim),
        n_q=n_q,
        card=int(lm["card"]),
        t5_name=t5_name,
        t5_width=T5_WIDTHS[t5_name],
        cfg_coef=float(lookup(cfg, "classifier_free_guidance.inference_coef", 3.0)),
        segment_duration_s=float(lookup(cfg, "dataset.segment_duration", 10.0)),
        sample_rate=int(lookup(cfg, "sample_rate")),
        channels=int(lookup(cfg, "channels", 1)),
        positional_max_period=float(lm.get("max_period", 10000.0)),
        num_chroma=chroma[0] if chroma else None,
        chroma_length=chroma[1] if chroma else None,
    )


@dataclass(frozen=True)
class MagnetSettings:
    """What MAGNeT's decoding reads beyond the transformer's shape (audiocraft's MagnetLMModel)."""

    span_len: int  # masked spans are whole runs of this many frames
    subcodes_context: int  # codebooks > 0 attend to frames at most this far away; -1: all
    segment_duration_s: float  # the length it was trained on, the most it generates

    def as_dict(self) -> dict[str, Any]:
        return {"span_len": self.span_len, "subcodes_context": self.subcodes_context,
                "segment_duration_s": self.segment_duration_s}  # fmt: skip


def is_magnet(cfg: dict[str, Any]) -> bool:
    return cfg.get("lm_model") == MAGNET_LM


def magnet_settings(cfg: dict[str, Any]) -> MagnetSettings:
    """MAGNeT's masking settings, as audiocraft's loader passes them to the model: the span length
    from masking.span_len, the segment from dataset.segment_duration."""
    span_len = int(lookup(cfg, "masking.span_len"))
    context = int(lookup(cfg, "transformer_lm.subcodes_context", 5))
    segment = float(lookup(cfg, "dataset.segment_duration"))
    if span_len < 1:
        raise ConversionError(f"xp.cfg masking.span_len = {span_len}: it must be at least 1")
    if context < -1:
        raise ConversionError(f"xp.cfg transformer_lm.subcodes_context = {context}: -1 (all) or a frame count")
    if segment <= 0 or segment != int(segment):
        raise ConversionError(f"xp.cfg dataset.segment_duration = {segment}: MAGNeT needs whole seconds")
    return MagnetSettings(span_len=span_len, subcodes_context=context, segment_duration_s=segment)


# ChromaStemConditioner's settings that MusicgenMelody (and the engine's chroma) compute exactly.
_CHROMA_STEM = {"radix2_exp": 14, "argmax": True, "match_len_on_eval": True, "eval_wavs": None}
_CHROMA_STEM_FREE = {"n_chroma", "sample_rate", "n_eval_wavs", "cache_path"}  # no effect at inference, or read below


def _prepended(cfg: dict[str, Any], kind: str) -> None:
    """The fuser of a model whose audio condition (self_wav) and text are both prepended, as
    MusicgenMelody has them (audiocraft prepends the text first and the audio's before it: audio,
    text, then the tokens): chroma2music's and style2music's."""
    prepend = lookup(cfg, "fuser.prepend", [])
    if sorted(prepend) != ["description", "self_wav"]:
        raise ConversionError(f"xp.cfg fuser.prepend = {prepend!r}: a {kind} model prepends [self_wav, description]")
    for key in ("cross", "sum", "input_interpolate"):
        _require(cfg, f"fuser.{key}", [], [])
    conditioners = lookup(cfg, "conditioners")
    if set(conditioners) != {"description", "self_wav"}:
        raise ConversionError(
            f"xp.cfg conditioners = {sorted(conditioners)}: a {kind} model has [description, self_wav]"
        )


def style_prefix(cfg: dict[str, Any]) -> tuple[int, int]:
    """(num_chroma, chroma_length) of a MusicGen-Style export in the MusicgenMelody class: the style
    conditioner's width (its output_proj is the audio projection) and its most tokens."""
    from server.models.convert.style import prefix_length, style_settings

    _prepended(cfg, "style")
    settings = style_settings(cfg)
    return settings.dim, prefix_length(settings)


def melody_settings(cfg: dict[str, Any]) -> tuple[int, int]:
    """(num_chroma, chroma_length) of a MusicGen-Melody export: audiocraft's chroma2music, the chroma
    (self_wav, a ChromaStemConditioner) and the text both prepended."""
    _prepended(cfg, "melody")
    _require(cfg, "conditioners.self_wav.model", "chroma_stem")
    stem = dict(lookup(cfg, "conditioners.self_wav.chroma_stem"))
    for key, expected in _CHROMA_STEM.items():
        _require(cfg, f"conditioners.self_wav.chroma_stem.{key}", expected, expected if key == "eval_wavs" else ...)
    extra = set(stem) - set(_CHROMA_STEM) - _CHROMA_STEM_FREE
    if extra:
        raise ConversionError(f"xp.cfg conditioners.self_wav.chroma_stem.{sorted(extra)[0]}: does not convert")
    sample_rate = int(lookup(cfg, "sample_rate"))
    _require(cfg, "conditioners.self_wav.chroma_stem.sample_rate", sample_rate)
    hop = 2 ** _CHROMA_STEM["radix2_exp"] // 4
    # The prefix length: the chroma of one training segment (ChromaStemConditioner._get_chroma_len).
    length = 1 + int(sample_rate * float(lookup(cfg, "dataset.segment_duration", 10.0))) // hop
    return int(stem.get("n_chroma", 12)), length


def decoder_config_kwargs(s: LMSettings) -> dict[str, Any]:
    """MusicgenDecoderConfig arguments for these settings."""
    return {
        "vocab_size": s.card,
        "num_codebooks": s.n_q,
        "hidden_size": s.dim,
        "num_hidden_layers": s.num_layers,
        "num_attention_heads": s.num_heads,
        "ffn_dim": s.ffn_dim,
        "activation_function": "gelu",
        "max_position_embeddings": 2048,
        "pad_token_id": s.card,
        "bos_token_id": s.card,
        "audio_channels": s.channels,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "layerdrop": 0.0,
        "scale_embedding": False,
        "tie_word_embeddings": False,
    }


def encodec_config_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """EncodecConfig arguments for the compression model an xp.cfg describes (SEANet + RVQ)."""
    _require(cfg, "compression_model", "encodec")
    _require(cfg, "encodec.autoencoder", "seanet")
    _require(cfg, "encodec.quantizer", "rvq")
    seanet = seanet_config_kwargs(cfg)
    sample_rate = int(lookup(cfg, "encodec.sample_rate", lookup(cfg, "sample_rate", 0)))
    frame_rate = sample_rate / math.prod(seanet["upsampling_ratios"])
    n_q, bins = int(lookup(cfg, "rvq.n_q")), int(lookup(cfg, "rvq.bins"))
    # EncodecModel keeps as many codebooks as its largest bandwidth needs: exactly n_q at this one.
    bandwidth_kbps = n_q * frame_rate * math.log2(bins) / 1000
    return seanet | {
        "sampling_rate": sample_rate,
        "audio_channels": int(lookup(cfg, "encodec.channels", lookup(cfg, "channels", 1))),
        "normalize": bool(lookup(cfg, "encodec.renormalize", False)),
        "target_bandwidths": [bandwidth_kbps],
        "codebook_size": bins,
        "codebook_dim": int(lookup(cfg, "seanet.dimension")),
        "chunk_length_s": None,
        "overlap": None,
    }


def seanet_config_kwargs(cfg: dict[str, Any], norms: tuple[str, ...] = ("weight_norm",)) -> dict[str, Any]:
    """The EncodecConfig arguments of the SEANet encoder and decoder in an xp.cfg's `seanet` section,
    after checking what transformers' EncodecEncoder and EncodecDecoder hard-code. `norms`: the
    convolution norms accepted (weight norm only reparametrises the weights, so a converter that
    folds it may take "none" too); the arguments always say weight_norm, the one transformers has
    without a GroupNorm."""
    seanet = lookup(cfg, "seanet")
    # Encoder- or decoder-only overrides would make the two halves differ: EncodecModel has one config.
    if lookup(cfg, "seanet.encoder", {}) not in ({}, None):
        raise ConversionError(f"xp.cfg seanet.encoder = {lookup(cfg, 'seanet.encoder')!r}: overrides do not convert")
    decoder_over = dict(lookup(cfg, "seanet.decoder", {}) or {})
    trim = float(decoder_over.pop("trim_right_ratio", 1.0))
    for key in ("final_activation", "final_activation_params"):
        if decoder_over.pop(key, None) is not None:
            raise ConversionError(f"xp.cfg seanet.decoder.{key}: a final activation does not convert")
    if decoder_over:
        raise ConversionError(f"xp.cfg seanet.decoder overrides {sorted(decoder_over)}: they do not convert")
    _require(cfg, "seanet.activation", "ELU")
    _require(cfg, "seanet.activation_params", {"alpha": 1.0}, {"alpha": 1.0})
    norm = lookup(cfg, "seanet.norm")
    if norm not in norms:
        raise ConversionError(f"xp.cfg seanet.norm = {norm!r}: only {' or '.join(norms)} converts")
    _require(cfg, "seanet.disable_norm_outer_blocks", 0, 0)
    if int(seanet["lstm"]) < 1:  # EncodecEncoder and EncodecDecoder always have their LSTM
        raise ConversionError(f"xp.cfg seanet.lstm = {seanet['lstm']!r}: only a SEANet with its LSTM converts")
    return {
        "hidden_size": int(seanet["dimension"]),
        "num_filters": int(seanet["n_filters"]),
        "num_residual_layers": int(seanet["n_residual_layers"]),
        "upsampling_ratios": [int(r) for r in seanet["ratios"]],
        "norm_type": "weight_norm",
        "kernel_size": int(seanet["kernel_size"]),
        "last_kernel_size": int(seanet["last_kernel_size"]),
        "residual_kernel_size": int(seanet["residual_kernel_size"]),
        "dilation_growth_rate": int(seanet["dilation_base"]),
        "use_causal_conv": bool(seanet["causal"]),
        "pad_mode": str(seanet["pad_mode"]),
        "compress": int(seanet["compress"]),
        "num_lstm_layers": int(seanet["lstm"]),
        "trim_right_ratio": trim,
        "use_conv_shortcut": not bool(seanet["true_skip"]),
    }
