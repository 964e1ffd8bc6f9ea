"""audiocraft's export format -> a MusicgenForConditionalGeneration folder.

An export is `state_dict.bin` ({'best_state': LM state dict, 'xp.cfg': YAML}) and
`compression_state_dict.bin` (the same for the EnCodec compression model). The text encoder is not in
the export: audiocraft's T5 conditioner loads it by name, so it comes from a T5 repo.

The conversion is strict: every tensor of the target model is filled from the export or the T5 repo,
every key of the export is used, every shape matches; anything else raises ConversionError naming the
key. The result holds the config, the weights, the T5 tokenizer and a generation config; a MAGNeT
export (lm_model transformer_lm_magnet: the same transformer, non-causal) also its masking settings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from server.models.convert import keys, style, xpcfg
from server.models.convert.mert import load_mert
from server.models.convert.xpcfg import ConversionError

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
MAGNET_FILE = "magnet.json"  # in the converted folder of a MAGNeT export: its masking settings


def read_package(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(best_state, parsed xp.cfg) of one export file. weights_only: an export holds tensors and a
    YAML string, nothing that needs arbitrary unpickling."""
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"{path.name} is not a readable audiocraft export ({exc})") from exc
    if not isinstance(pkg, dict):
        raise ConversionError(f"{path.name}: expected a dict with best_state and xp.cfg")
    if "pretrained" in pkg:
        raise ConversionError(
            f"{path.name} names a pretrained compression model ({pkg['pretrained']!r}) instead of holding it; "
            "only exports with the full compression model convert"
        )
    for key in ("best_state", "xp.cfg"):
        if key not in pkg:
            raise ConversionError(f"{path.name} has no {key!r}")
    state = pkg["best_state"]
    if isinstance(state, dict) and "model" in state and not isinstance(state["model"], torch.Tensor):
        state = state["model"]  # a solver checkpoint's best_state
    cfg_text = pkg["xp.cfg"]
    if not isinstance(cfg_text, str):
        raise ConversionError(f"{path.name}: xp.cfg is not a YAML string")
    return dict(state), xpcfg.parse(cfg_text)


def build_config(lm_cfg: dict[str, Any], codec_cfg: dict[str, Any], t5_dir: Path):
    """(MusicgenConfig, LMSettings) for an export and the T5 repo that goes with it."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    settings = xpcfg.lm_settings(lm_cfg)
    text = T5Config.from_pretrained(t5_dir, local_files_only=True)
    audio = EncodecConfig(**xpcfg.encodec_config_kwargs(codec_cfg))
    if audio.sampling_rate != settings.sample_rate:
        raise ConversionError(
            f"the LM's sample_rate ({settings.sample_rate}) differs from the compression model's "
            f"({audio.sampling_rate})"
        )
    if settings.num_chroma is not None:  # MusicGen-Melody: the chroma and the text prepended
        from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

        decoder = MusicgenMelodyDecoderConfig(**xpcfg.decoder_config_kwargs(settings))
        config = MusicgenMelodyConfig(
            text_encoder=text, audio_encoder=audio, decoder=decoder,
            num_chroma=settings.num_chroma, chroma_length=settings.chroma_length,
        )  # fmt: skip
        return config, settings
    decoder = MusicgenDecoderConfig(**xpcfg.decoder_config_kwargs(settings))
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder), settings


def _text_encoder_state(t5_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import T5EncoderModel

    t5 = T5EncoderModel.from_pretrained(t5_dir, dtype=torch.float32, local_files_only=True)
    return {f"text_encoder.{k}": v for k, v in t5.state_dict().items()}


# A melody model's chroma extractor keeps its STFT window in the state: a Hann window, which the
# engine's chroma (server/engine/chroma.py) uses too. It is checked, then left out.
_CHROMA_WINDOW = "condition_provider.conditioners.self_wav.chroma.spec.window"


def _without_chroma_window(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    window = state.get(_CHROMA_WINDOW)
    if window is None:
        return state
    if not torch.allclose(window.float(), torch.hann_window(window.numel()), atol=1e-6):
        raise ConversionError(f"{_CHROMA_WINDOW} is not a Hann window: the chroma would differ")
    return {k: v for k, v in state.items() if k != _CHROMA_WINDOW}


def check_against(
    model: torch.nn.Module, mapped: dict[str, torch.Tensor], origin: dict[str, str], name_of=None
) -> None:
    """Every tensor of `model` is provided with its exact shape, and nothing else is. origin: the
    export's name of each mapped tensor; name_of: the export's name of a tensor of `model`."""
    name_of = name_of or _audiocraft_name
    expected = model.state_dict()
    for name, tensor in mapped.items():
        if name not in expected:
            raise ConversionError(
                f"unmapped key in the export: {origin.get(name, name)!r} (-> {name!r}, not in the model)"
            )
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise ConversionError(
                f"shape mismatch for {origin.get(name, name)!r}: the export has {tuple(tensor.shape)}, "
                f"{name!r} needs {want}"
            )
    missing = [name for name in expected if name not in mapped]
    if missing:
        raise ConversionError(
            f"missing key: the export has no {name_of(missing[0])!r} (for {missing[0]!r}; "
            f"{len(missing)} missing in all)"
        )


def _audiocraft_name(target: str) -> str:
    """The audiocraft key a transformers parameter comes from (for error messages)."""
    return keys.audiocraft_name(target) or target


def _origins(source: dict[str, torch.Tensor], rules, split_rules=(), prefix="") -> dict[str, str]:
    """transformers name -> the audiocraft name it came from (for error messages)."""
    names = {}
    for name in source:
        for target in keys.map_state({name: source[name]}, rules, split_rules, prefix):
            names[target] = name
    return names


def convert_export(export_dir: Path, t5_dir: Path, out_dir: Path, mert_dir: Path | None = None) -> None:
    """Write the converted model (config, safetensors, tokenizer, generation config) into out_dir. A
    MusicGen-Style export also writes its style conditioner (style.safetensors, style.json) and the
    MERT repo `mert_dir` converted (mert/)."""
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    export_dir, t5_dir = Path(export_dir), Path(t5_dir)
    lm_state, lm_cfg = read_package(export_dir / LM_FILE)
    lm_state = _without_chroma_window(lm_state)
    codec_state, codec_cfg = read_package(export_dir / COMPRESSION_FILE)
    config, settings = build_config(lm_cfg, codec_cfg, t5_dir)
    style_state = mert = None
    if style.is_style(lm_cfg):  # its conditioner and MERT, strictly, before anything is written
        if mert_dir is None:
            raise ConversionError("a MusicGen-Style export needs its MERT repo (m-a-p/MERT-v1-95M) to convert")
        mert = load_mert(mert_dir)
        style_cfg = dataclasses.replace(style.style_settings(lm_cfg), mert_width=int(mert.config.hidden_size))
        lm_state, style_state = style.split_state(lm_state)
        style.check_style(style_cfg, style_state)

    mapped = keys.map_state(lm_state, keys.LM_RULES, keys.IN_PROJ_RULES)
    mapped |= keys.map_state(codec_state, keys.CODEC_RULES, prefix="audio_encoder.")
    origin = _origins(lm_state, keys.LM_RULES, keys.IN_PROJ_RULES)
    origin |= _origins(codec_state, keys.CODEC_RULES, prefix="audio_encoder.")
    mapped |= _text_encoder_state(t5_dir)

    # The T5's width against the conditioner's projection is checked with every other shape below
    # (output_proj -> enc_to_dec_proj), so a tiny T5 stand-in of any width converts.
    if config.text_encoder.hidden_size == settings.dim:
        # transformers' MusicGen drops the text projection when the widths match; audiocraft keeps it.
        raise ConversionError(
            f"the T5 in {t5_dir} and the LM are both {settings.dim} wide: the MusicGen class has no "
            "place for 'condition_provider.conditioners.description.output_proj'"
        )
    melody = settings.num_chroma is not None
    cls = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    with torch.device("meta"):
        model = cls(config)
    check_against(model, mapped, origin)
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=True, assign=True)
    model.generation_config = GenerationConfig(
        do_sample=True,
        guidance_scale=settings.cfg_coef,
        top_k=250,
        max_length=int(settings.segment_duration_s * config.audio_encoder.frame_rate) + settings.n_q,
        pad_token_id=settings.card,
        bos_token_id=settings.card,
        decoder_start_token_id=settings.card,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(t5_dir, local_files_only=True).save_pretrained(out_dir)
    if mert is not None:
        style.write_style(out_dir, style_cfg, style_state)
        mert.save_pretrained(out_dir / style.MERT_DIR)
    if xpcfg.is_magnet(lm_cfg):  # the transformer is MusicGen's; how MAGNeT decodes with it goes beside
        settings = xpcfg.magnet_settings(lm_cfg)
        (out_dir / MAGNET_FILE).write_text(json.dumps(settings.as_dict(), indent=1) + "\n")
