"""AudioSeal's published checkpoints -> the watermark generator and detector the engine runs
(server/engine/watermark.py).

facebook/audioseal holds `generator_base.pth` and `detector_base.pth`, each a torch pickle of
{'xp.cfg': the training config's inference part (OmegaConf), 'model': the state dict}, and may hold
`base.yaml`, the Hydra config AudioCraft's loader reads (audioseal.nbits, seanet, detector). The
state dicts use audiocraft's SEANet names with weight norm (`<conv>.weight_g`, `.weight_v`; the
parametrization's `.original0/1`, or a plain `.weight`, convert alike: weight norm is folded).

The conversion is strict: every tensor of the two modules is filled, every key of the checkpoints is
used, every shape matches, the config says nothing the modules cannot do (a normalizer, a final
activation, another sample rate), and the message width agrees wherever it is stated; anything else
raises ConversionError naming the key. The result is `generator.safetensors`, `detector.safetensors`
and `watermark.json` (the WatermarkConfig).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from server.engine.watermark import SAMPLE_RATE, Detector, Generator, WatermarkConfig
from server.models.convert import keys, omegaconf_pickle, xpcfg
from server.models.convert.audiocraft_export import check_against
from server.models.convert.xpcfg import ConversionError

GENERATOR_FILE = "generator_base.pth"
DETECTOR_FILE = "detector_base.pth"
CONFIG_FILE = "base.yaml"  # optional on the hub: AudioCraft falls back to its default config
CHECKPOINT_FILES = (GENERATOR_FILE, DETECTOR_FILE)
OUTPUT_FILES = ("generator.safetensors", "detector.safetensors", "watermark.json")

# audiocraft's SEANet names -> transformers' EncodecEncoder / EncodecDecoder names, weight norm folded.
_SEANET = [
    ("{half}.model.{i}.conv.conv.{p}", "{half}.layers.{i}.conv.{p}"),
    ("{half}.model.{i}.block.{j}.conv.conv.{p}", "{half}.layers.{i}.block.{j}.conv.{p}"),
    ("{half}.model.{i}.shortcut.conv.conv.{p}", "{half}.layers.{i}.shortcut.conv.{p}"),
    ("decoder.model.{i}.convtr.convtr.{p}", "decoder.layers.{i}.conv.{p}"),
    ("{half}.model.{i}.lstm.{p}", "{half}.layers.{i}.lstm.{p}"),
]
GENERATOR_RULES = [*_SEANET, ("msg_processor.msg_processor.weight", "message.weight")]
DETECTOR_RULES = [
    *[(a.replace("{half}", "detector.0"), b.replace("{half}", "encoder")) for a, b in _SEANET if "{half}" in a],
    ("detector.0.reverse_convolution.{p}", "upsample.{p}"),
    ("detector.1.{p}", "head.{p}"),
]
_WEIGHT_NORM = {  # the two tensors of one weight-norm weight, in each naming: (magnitude, direction)
    "legacy": (".weight_g", ".weight_v"),
    "parametrization": (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
}


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, resolved xp.cfg) of one AudioSeal checkpoint."""
    try:
        pkg = omegaconf_pickle.load(path)
    except Exception as exc:
        raise ConversionError(f"{path.name} is not a readable AudioSeal checkpoint ({exc})") from exc
    if not isinstance(pkg, dict):
        raise ConversionError(f"{path.name}: expected a dict with 'model' and 'xp.cfg'")
    state = pkg.get("model")
    if state is None and isinstance(pkg.get("best_state"), dict):
        state = pkg["best_state"].get("model")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path.name} has no state dict under 'model'")
    if "xp.cfg" not in pkg:
        raise ConversionError(f"{path.name} has no 'xp.cfg'")
    raw = pkg["xp.cfg"]
    try:
        cfg = omegaconf_pickle.plain(raw)
        training = omegaconf_pickle.root(omegaconf_pickle.find_container(raw))
    except ValueError as exc:
        raise ConversionError(f"{path.name}: xp.cfg does not read as a config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ConversionError(f"{path.name}: xp.cfg is not a mapping")
    return dict(state), xpcfg.resolve_references({**training, **cfg})


def fold_weight_norm(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """`state` with each weight-norm pair replaced by the `<conv>.weight` it stands for. A magnitude
    without its direction (or the other way round) is an error naming the key."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state.items():
        for suffixes in _WEIGHT_NORM.values():
            which = next((i for i, s in enumerate(suffixes) if key.endswith(s)), None)
            if which is not None:
                pairs.setdefault(key[: -len(suffixes[which])], {})[which] = tensor
                break
        else:
            out[key] = tensor
    for conv, parts in pairs.items():
        if set(parts) != {0, 1}:
            half = "direction (weight_v)" if 0 in parts else "magnitude (weight_g)"
            raise ConversionError(f"{name}: {conv} has weight norm without its {half}")
        if conv + ".weight" in out:
            raise ConversionError(f"{name}: {conv} has both a weight and a weight-norm pair")
        g, v = parts[0], parts[1]
        if g.dim() != v.dim() or g.shape[0] != v.shape[0] or g.numel() != v.shape[0]:
            raise ConversionError(
                f"{name}: {conv} weight norm shapes {tuple(g.shape)} and {tuple(v.shape)} do not pair"
            )
        out[conv + ".weight"] = torch._weight_norm(v.float(), g.float(), 0)
    return out


def transposed_layers(module: torch.nn.Module) -> set[int]:
    """The decoder layers that are transposed convolutions: audiocraft names them `convtr.convtr`,
    transformers `conv` like the others, so the names alone do not tell them apart."""
    decoder = getattr(module, "decoder", None)
    if decoder is None:
        return set()
    return {i for i, layer in enumerate(decoder.layers) if type(layer).__name__ == "EncodecConvTranspose1d"}


def _map(
    state: dict[str, torch.Tensor], rules, name: str, transposed: set[int]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in fold_weight_norm(state, name).items():
        try:
            ((target, value),) = keys.map_state({key: tensor}, rules).items()
        except ConversionError:
            raise ConversionError(
                f"unmapped key in {name}: {key!r} (no part of AudioSeal's modules takes it)"
            ) from None
        parts = key.split(".")
        if parts[:2] == ["decoder", "model"] and parts[3] in ("conv", "convtr"):
            if (parts[3] == "convtr") != (int(parts[2]) in transposed):
                kind = "a transposed" if int(parts[2]) in transposed else "a plain"
                raise ConversionError(
                    f"{name}: {key!r} names decoder layer {parts[2]} wrongly: it is {kind} convolution"
                )
        mapped[target], origin[target] = value.float().contiguous(), f"{name}: {key}"
    return mapped, origin


def _shape(state: dict[str, torch.Tensor], key: str, name: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"missing key: {name} has no {key!r}")
    return tuple(state[key].shape)


def _nbits(gen: dict[str, torch.Tensor], det: dict[str, torch.Tensor], stated: list[tuple[str, int]]) -> int:
    """The message's width, from the shapes, checked against every place a config states it."""
    rows = _shape(gen, "msg_processor.msg_processor.weight", GENERATOR_FILE)[0]
    head = _shape(det, "detector.1.weight", DETECTOR_FILE)[0]
    if rows % 2 or head - 2 != rows // 2:
        raise ConversionError(
            f"the generator's message table has {rows} rows (2 per bit) and the detector's head {head} outputs "
            "(2 + 1 per bit): they are not one message width"
        )
    nbits = rows // 2
    for where, value in stated:
        if int(value) != nbits:
            raise ConversionError(f"{where} = {value}, but the checkpoints' shapes hold a {nbits}-bit message")
    return nbits


def _check_cfg(cfg: dict[str, Any], where: str) -> None:
    """What AudioSeal's config may say that these modules do not do."""
    if cfg.get("normalizer"):
        raise ConversionError(f"{where} normalizer = {cfg['normalizer']!r}: the loudness normalizer does not convert")
    for key in ("sample_rate", "audioseal.sample_rate"):
        rate = xpcfg.lookup(cfg, key, SAMPLE_RATE)
        if int(rate) != SAMPLE_RATE:
            raise ConversionError(f"{where} {key} = {rate!r}: AudioSeal's modules run at {SAMPLE_RATE} Hz only")
    for key in ("channels", "seanet.channels", "audioseal.channels"):
        if int(xpcfg.lookup(cfg, key, 1)) != 1:
            raise ConversionError(f"{where} {key} = {xpcfg.lookup(cfg, key)!r}: AudioSeal is mono")
    if xpcfg.lookup(cfg, "seanet.moshi", None):
        raise ConversionError(f"{where} seanet.moshi: the streaming models' settings do not convert")


def seanet_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    _check_cfg(cfg, where)
    seanet = dict(xpcfg.lookup(cfg, "seanet"))
    seanet.pop("detector", None)  # AudioSeal's loader moves it out of seanet; its width comes from the shapes
    try:
        kwargs = xpcfg.seanet_config_kwargs({**cfg, "seanet": seanet}, norms=("weight_norm", "none"))
    except KeyError as exc:
        raise ConversionError(f"{where} seanet has no {exc.args[0]!r}") from None
    return kwargs | {"audio_channels": 1, "sampling_rate": SAMPLE_RATE}


def build_config(snapshot: Path) -> tuple[WatermarkConfig, dict, dict]:
    """(config, generator state, detector state) of a snapshot, the configs checked against each other."""
    gen_state, gen_cfg = read_checkpoint(snapshot / GENERATOR_FILE)
    det_state, det_cfg = read_checkpoint(snapshot / DETECTOR_FILE)
    seanet = seanet_config(gen_cfg, GENERATOR_FILE)
    if seanet_config(det_cfg, DETECTOR_FILE) != seanet:
        raise ConversionError(f"{GENERATOR_FILE} and {DETECTOR_FILE} describe different SEANets")
    stated = [
        (f"{n} nbits", c["nbits"]) for n, c in ((GENERATOR_FILE, gen_cfg), (DETECTOR_FILE, det_cfg)) if "nbits" in c
    ]
    base = snapshot / CONFIG_FILE
    if base.is_file():
        try:
            base_cfg = xpcfg.parse(base.read_text())
        except yaml.YAMLError as exc:
            raise ConversionError(f"{CONFIG_FILE} is not YAML ({exc})") from None
        if seanet_config(base_cfg, CONFIG_FILE) != seanet:
            raise ConversionError(f"{CONFIG_FILE} describes another SEANet than the checkpoints")
        if xpcfg.lookup(base_cfg, "audioseal.nbits", None) is not None:
            stated.append((f"{CONFIG_FILE} audioseal.nbits", base_cfg["audioseal"]["nbits"]))
    nbits = _nbits(gen_state, det_state, stated)
    output_dim = _shape(det_state, "detector.0.reverse_convolution.weight", DETECTOR_FILE)[1]
    return WatermarkConfig(seanet=seanet, nbits=nbits, output_dim=output_dim), gen_state, det_state


def convert_snapshot(snapshot: Path, out_dir: Path) -> None:
    """Write the converted generator, detector and config into out_dir."""
    from safetensors.torch import save_file

    config, gen_state, det_state = build_config(Path(snapshot))
    out_dir.mkdir(parents=True, exist_ok=True)
    for cls, state, rules, name, file in (
        (Generator, gen_state, GENERATOR_RULES, GENERATOR_FILE, OUTPUT_FILES[0]),
        (Detector, det_state, DETECTOR_RULES, DETECTOR_FILE, OUTPUT_FILES[1]),
    ):
        with torch.device("meta"):
            module = cls(config)
        mapped, origin = _map(state, rules, name, transposed_layers(module))
        check_against(module, mapped, origin)
        save_file(mapped, str(out_dir / file))
    # Inside the cache's staging folder: renamed into place whole (server/models/convert/cache.py).
    (out_dir / OUTPUT_FILES[2]).write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")
