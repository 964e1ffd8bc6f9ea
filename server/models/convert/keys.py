"""Key names: audiocraft's LM and compression model against transformers' MusicGen and EnCodec.

Each rule pairs an audiocraft name template with the transformers one; `{i}`, `{j}` stand for
indices and `{p}` for a parameter name. The attention input projections are the one place where
names do not map one to one: audiocraft keeps q, k and v as one `in_proj_weight` of 3 * dim rows.
The rules run both ways: the converter maps audiocraft to transformers, and the tiny-model writer
(which has no audiocraft package) maps transformers to audiocraft.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from server.models.convert.xpcfg import ConversionError

_DEC = "decoder.model.decoder"
_LAYER = f"{_DEC}.layers.{{i}}"

LM_RULES: list[tuple[str, str]] = [
    ("emb.{i}.weight", f"{_DEC}.embed_tokens.{{i}}.weight"),
    ("transformer.layers.{i}.self_attn.out_proj.weight", f"{_LAYER}.self_attn.out_proj.weight"),
    ("transformer.layers.{i}.cross_attention.out_proj.weight", f"{_LAYER}.encoder_attn.out_proj.weight"),
    ("transformer.layers.{i}.linear1.weight", f"{_LAYER}.fc1.weight"),
    ("transformer.layers.{i}.linear2.weight", f"{_LAYER}.fc2.weight"),
    ("transformer.layers.{i}.norm1.{p}", f"{_LAYER}.self_attn_layer_norm.{{p}}"),
    ("transformer.layers.{i}.norm_cross.{p}", f"{_LAYER}.encoder_attn_layer_norm.{{p}}"),
    ("transformer.layers.{i}.norm2.{p}", f"{_LAYER}.final_layer_norm.{{p}}"),
    ("out_norm.{p}", f"{_DEC}.layer_norm.{{p}}"),
    ("linears.{i}.weight", "decoder.lm_heads.{i}.weight"),
    ("condition_provider.conditioners.description.output_proj.{p}", "enc_to_dec_proj.{p}"),
    # A melody model's chroma projection (ChromaStemConditioner).
    ("condition_provider.conditioners.self_wav.output_proj.{p}", "audio_enc_to_dec_proj.{p}"),
]
# audiocraft name -> the three transformers names its rows split into (q, k, v).
IN_PROJ_RULES: list[tuple[str, str]] = [
    ("transformer.layers.{i}.self_attn.in_proj_weight", f"{_LAYER}.self_attn.{{qkv}}_proj.weight"),
    ("transformer.layers.{i}.cross_attention.in_proj_weight", f"{_LAYER}.encoder_attn.{{qkv}}_proj.weight"),
]

# audiocraft's weight norm is torch's old `weight_norm` (weight_g, weight_v); transformers uses the
# parametrization (original0 = g, original1 = v).
_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_CODEC_MODULES: list[tuple[str, str]] = [
    ("{half}.model.{i}.conv.conv", "{half}.layers.{i}.conv"),
    ("{half}.model.{i}.block.{j}.conv.conv", "{half}.layers.{i}.block.{j}.conv"),
    ("{half}.model.{i}.shortcut.conv.conv", "{half}.layers.{i}.shortcut.conv"),
    ("decoder.model.{i}.convtr.convtr", "decoder.layers.{i}.conv"),
]
CODEC_RULES: list[tuple[str, str]] = []
for _src, _dst in _CODEC_MODULES:
    CODEC_RULES.append((f"{_src}.bias", f"{_dst}.bias"))
    for _old, _new in _WN.items():
        CODEC_RULES.append((f"{_src}.{_old}", f"{_dst}.{_new}"))
CODEC_RULES += [
    ("{half}.model.{i}.lstm.{p}", "{half}.layers.{i}.lstm.{p}"),
    ("quantizer.vq.layers.{i}._codebook.{p}", "quantizer.layers.{i}.codebook.{p}"),
]

_FIELDS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "p": r"(?P<p>[A-Za-z0-9_]+)", "half": r"(?P<half>encoder|decoder)"}
_FIELDS["qkv"] = r"(?P<qkv>q|k|v)"


def _regex(template: str) -> re.Pattern[str]:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : m.start()]) + _FIELDS[m.group(1)]
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + "$")


def _compile(rules: Iterable[tuple[str, str]], reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    return [(_regex(b if reverse else a), a if reverse else b) for a, b in rules]


def _rename(name: str, compiled: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in compiled:
        m = pattern.match(name)
        if m:
            return template.format(**m.groupdict())
    return None


def map_state(
    source: dict[str, torch.Tensor], rules: list[tuple[str, str]], split_rules: list[tuple[str, str]] = (), prefix=""
) -> dict[str, torch.Tensor]:
    """audiocraft names -> transformers names (with `prefix`), splitting in_proj weights in three.
    Any key no rule maps raises ConversionError naming it."""
    plain, split = _compile(rules, False), _compile(split_rules, False)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        target = _rename(name, plain)
        if target is not None:
            out[prefix + target] = tensor
            continue
        template = _rename(name, [(p, t.replace("{qkv}", "{{qkv}}")) for p, t in split])
        if template is None:
            raise ConversionError(f"unmapped key in the export: {name!r} (no transformers parameter takes it)")
        if tensor.dim() != 2 or tensor.shape[0] % 3:
            raise ConversionError(f"{name!r} has shape {tuple(tensor.shape)}; expected [3 * dim, dim]")
        for part, chunk in zip("qkv", tensor.chunk(3, dim=0), strict=True):
            out[prefix + template.format(qkv=part)] = chunk
    return out


def unmap_state(
    target: dict[str, torch.Tensor], rules: list[tuple[str, str]], split_rules: list[tuple[str, str]] = (), prefix=""
) -> dict[str, torch.Tensor]:
    """The inverse of map_state: transformers names (under `prefix`) -> audiocraft names."""
    plain = _compile(rules, True)
    fused = [(_regex(b), a) for a, b in split_rules]
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for full, tensor in target.items():
        if not full.startswith(prefix):
            continue
        name = full[len(prefix) :]
        source = _rename(name, plain)
        if source is not None:
            out[source] = tensor
            continue
        for pattern, template in fused:
            m = pattern.match(name)
            if m:
                groups = m.groupdict()
                part = groups.pop("qkv")
                pending.setdefault(template.format(**groups), {})[part] = tensor
                break
        else:
            raise ConversionError(f"no audiocraft name for {full!r}")
    for name, parts in pending.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def audiocraft_name(target: str) -> str | None:
    """The audiocraft key a transformers key (of the whole MusicgenForConditionalGeneration) comes from."""
    codec = "audio_encoder."
    if target.startswith(codec):
        return _rename(target[len(codec) :], _compile(CODEC_RULES, True))
    found = _rename(target, _compile(LM_RULES, True))
    if found is None:
        found = _rename(target, [(_regex(b), a.replace("{qkv}", "")) for a, b in IN_PROJ_RULES])
    return found
