"""Multi-Band Diffusion's published checkpoint (facebook/multiband-diffusion) -> config.json + safetensors.

The checkpoint (`mbd_musicgen_32khz.th`, as AudioCraft's `load_diffusion_models` reads it) is one
torch pickle: {'sample_rate': int, 'n_bands': int, 0: band, 1: band, ...}, each band
{'cfg': the training run's OmegaConf config, 'model_state': the U-Net's state dict,
'processor_state': the band processor's buffers (empty when it has none)}.

It is read with torch's weights-only unpickler, which takes only tensors, plain containers and the
OmegaConf classes named below: a checkpoint cannot run code while it loads. From each band's config
only what changes the numbers is kept (the U-Net's shape, the schedule, the processor); anything the
engine does not compute exactly as AudioCraft does raises ConversionError naming the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from server.hub.store import MBD_FILES
from server.models.convert.audiocraft_export import check_against
from server.models.convert.xpcfg import ConversionError

MUSICGEN_FILE = MBD_FILES[0]
CONFIG_FILE = "mbd_config.json"
WEIGHTS_FILE = "mbd.safetensors"

_UNET_KEYS = {
    "hidden", "depth", "growth", "max_channels", "emb_all_layers", "bilstm", "codec_dim", "kernel", "stride",
    "norm_groups", "res_blocks", "dropout", "transformer", "cross_attention",
}  # fmt: skip
_PROCESSOR_BUFFERS = {"counts", "sum_x", "sum_x2", "sum_target_x2"}


def _safe_globals() -> list:
    """What an OmegaConf config pickles as: its containers, nodes and metadata."""
    import typing
    from collections import defaultdict

    from omegaconf import DictConfig, ListConfig, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    node_types = [getattr(nodes, n) for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode")]
    return [DictConfig, ListConfig, ContainerMetadata, Metadata, *node_types, typing.Any, defaultdict, dict, list]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The raw package of an MBD checkpoint, with each band's OmegaConf config as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"{path.name} is not a readable MBD checkpoint ({exc})") from exc
    if not isinstance(pkg, dict) or not {"sample_rate", "n_bands"} <= set(pkg):
        raise ConversionError(f"{path.name}: expected a dict with sample_rate, n_bands and one entry per band")
    for i in range(int(pkg["n_bands"])):
        band = pkg.get(i)
        if not isinstance(band, dict) or not {"cfg", "model_state", "processor_state"} <= set(band):
            raise ConversionError(f"{path.name}: band {i} needs cfg, model_state and processor_state")
        cfg = band["cfg"]
        if isinstance(cfg, DictConfig):
            # Only the sections the engine reads are resolved: the rest of a training config may
            # reference things (the run's folder, the cluster) that do not exist here.
            cfg = {
                k: _plain(OmegaConf, cfg, k)
                for k in ("channels", "schedule", "diffusion_unet", "processor")
                if k in cfg
            }
        band["cfg"] = cfg
    return pkg


def _plain(omegaconf, cfg, key: str) -> Any:
    value = cfg[key]
    return omegaconf.to_container(value, resolve=True) if omegaconf.is_config(value) else value


def _lookup(cfg: dict[str, Any], path: str, band: int) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConversionError(f"band {band}: the config has no {path}")
        node = node[part]
    return node


def band_config(cfg: dict[str, Any], band: int) -> dict[str, Any]:
    """The engine's config of one band (unet, schedule, processor), after checking the rest."""
    unet = dict(_lookup(cfg, "diffusion_unet", band))
    unknown = set(unet) - _UNET_KEYS
    if unknown:
        raise ConversionError(f"band {band}: diffusion_unet.{sorted(unknown)[0]} is not a setting the engine knows")
    if unet.pop("transformer", False):
        raise ConversionError(
            f"band {band}: diffusion_unet.transformer = true (a transformer bottleneck) is not supported"
        )
    unet.pop("cross_attention", None)
    unet.pop("dropout", None)  # training only
    schedule = dict(_lookup(cfg, "schedule", band))
    if schedule.get("repartition", "power") != "power":
        raise ConversionError(f"band {band}: schedule.repartition = {schedule['repartition']!r}: only power converts")
    if schedule.get("n_bands") is not None:
        raise ConversionError(f"band {band}: schedule.n_bands = {schedule['n_bands']!r}: only null converts")
    processor = dict(_lookup(cfg, "processor", band))
    use = bool(processor.get("use", False))
    if use and processor.get("name") != "multi_band_processor":
        raise ConversionError(f"band {band}: processor.name = {processor.get('name')!r} is not supported")
    return {
        "channels": int(_lookup(cfg, "channels", band)),
        "unet": unet,
        "schedule": {
            "beta_t0": float(schedule.get("beta_t0", 1e-4)),
            "beta_t1": float(schedule.get("beta_t1", 0.02)),
            "beta_exp": float(schedule.get("beta_exp", 1.0)),
            "num_steps": int(schedule.get("num_steps", 1000)),
            "clip": float(schedule.get("clip", 5.0)),
            "rescale": float(schedule.get("rescale", 1.0)),
            "noise_scale": float(schedule.get("noise_scale", 1.0)),
        },
        "processor": {"n_bands": int(processor["n_bands"]), "power_std": processor.get("power_std", 1.0)}
        if use
        else None,
    }


def convert_checkpoint(path: Path, out_dir: Path) -> None:
    """Write CONFIG_FILE and WEIGHTS_FILE for the checkpoint at `path` into out_dir (strict: every
    tensor of the engine's modules comes from the checkpoint with its shape, and nothing else)."""
    from safetensors.torch import save_file

    from server.engine.mbd.build import build_bands

    pkg = read_checkpoint(path)
    config = {"sample_rate": int(pkg["sample_rate"]), "bands": []}
    tensors: dict[str, torch.Tensor] = {}
    for i in range(int(pkg["n_bands"])):
        band = pkg[i]
        config["bands"].append(band_config(band["cfg"], i))
        for part, state in (("unet", band["model_state"]), ("processor", band["processor_state"])):
            for name, tensor in dict(state).items():
                if not isinstance(tensor, torch.Tensor):
                    raise ConversionError(f"band {i}: {part} entry {name!r} is not a tensor")
                tensors[f"bands.{i}.{part}.{name}"] = tensor.detach().to(torch.float32).contiguous().clone()
    modules = build_bands(config, meta=True)
    check_against(modules, tensors, {n: _origin(n) for n in tensors}, name_of=_origin)
    if not all(math.isfinite(float(t.abs().max())) for t in tensors.values() if t.numel()):
        raise ConversionError("the checkpoint holds non-finite weights")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    save_file(tensors, str(out_dir / WEIGHTS_FILE))


def _origin(name: str) -> str:
    """A converted tensor's name as the checkpoint has it: band i's model_state or processor_state key."""
    _, band, part, key = name.split(".", 3)
    return f"[{band}]['{'model_state' if part == 'unet' else 'processor_state'}']['{key}']"
