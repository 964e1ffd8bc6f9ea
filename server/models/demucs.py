"""Demucs v4 (htdemucs): the source separator of melody conditioning, loaded strictly from its
published checkpoint formats (server/hub/demucs_layout.py) into the demucs package's own classes.

The demucs package (4.1) runs on this torch: its model, `apply_model` and `convert_audio` need no
torchaudio (only its training and file-reading code does, which is never imported here). What this
module adds is the loading: demucs' own `load_model` unpickles with `weights_only=False` and drops
parameters it does not know with a warning; here the pickle is read with `weights_only=True` (the
model class and `Fraction` are the only globals it may name), only the HTDemucs class is built,
and an unknown parameter, a missing or unexpected tensor, or a tensor of the wrong shape is an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from lib.catalogue import ModelSpec
from lib.errors import Invalid
from server.hub import demucs_layout
from server.models.loaded import Described, storage_bytes

# The only model class a checkpoint may name (demucs' other classes, Demucs and HDemucs, are not
# what AudioCraft's melody conditioning runs).
HTDEMUCS_CLASS = "demucs.htdemucs.HTDemucs"
_PICKLE_KEYS = {"klass", "args", "kwargs", "state"}
_PICKLE_OPTIONAL = {"training_args"}


class BadCheckpoint(Invalid, ValueError):
    """The htdemucs checkpoint does not load strictly; the message names the key or parameter."""

    code = "bad_checkpoint"


@dataclass(kw_only=True)
class SeparatorModel(Described):
    """A bag of HTDemucs models (demucs.apply.BagOfModels) in eval mode, float32."""

    model: Any
    precision: str = "float32"

    @property
    def sources(self) -> list[str]:
        return list(self.model.sources)

    @property
    def sample_rate(self) -> int:
        return int(self.model.samplerate)

    @property
    def audio_channels(self) -> int:
        return int(self.model.audio_channels)

    def memory_bytes(self) -> int:
        return storage_bytes(self.model.parameters())


def load_demucs(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> SeparatorModel:
    """Always float32 (AudioCraft runs it so; `precision` is the language models')."""
    from demucs.apply import BagOfModels

    started = time.perf_counter()
    path = demucs_layout.bag_file(snapshot, spec.name) or demucs_layout.bag_file(snapshot)
    if path is None:
        raise BadCheckpoint(f"{snapshot} has no {spec.name}.yaml (the bag of models)")
    bag = demucs_layout.read_bag(path)
    models = []
    for signature in bag.models:
        file = demucs_layout.model_file(snapshot, signature)
        if file is None:
            raise BadCheckpoint(f"{path.name} names model {signature}, which is not in {snapshot}")
        models.append(load_separator(file))
    for model in models[1:]:
        if (model.sources, model.samplerate, model.audio_channels) != (
            models[0].sources, models[0].samplerate, models[0].audio_channels,
        ):  # fmt: skip
            raise BadCheckpoint(f"{path.name}: its models separate different sources or rates")
    weights = [list(w) for w in bag.weights] if bag.weights is not None else None
    if weights is not None and any(len(w) != len(models[0].sources) for w in weights):
        raise BadCheckpoint(f"{path.name}: each model's weights must give one number per source")
    separator = BagOfModels(models, weights, bag.segment).to(device).eval()
    if int(separator.samplerate) != spec.sample_rate or int(separator.audio_channels) != spec.channels:
        raise BadCheckpoint(
            f"{snapshot} holds a {separator.samplerate} Hz, {separator.audio_channels}-channel separator; "
            f"{spec.name} is {spec.sample_rate} Hz, {spec.channels}-channel"
        )
    return SeparatorModel(
        spec=spec, model=separator, device=device, source=snapshot, load_time_s=time.perf_counter() - started
    )


def load_separator(path: Path):
    """One HTDemucs from a `<sig>.safetensors` (demucs 4.1's hub layout) or a `<sig>[-<sha>].th` pickle."""
    if path.suffix == ".safetensors":
        klass, args, kwargs, state = _read_safetensors(path)
    else:
        klass, args, kwargs, state = _read_pickle(path)
    if klass != HTDEMUCS_CLASS:
        raise BadCheckpoint(f"{path.name} is a {klass}, not an {HTDEMUCS_CLASS}")
    return build_htdemucs(args, kwargs, state, path.name)


def build_htdemucs(args: list, kwargs: dict, state: dict[str, torch.Tensor], name: str):
    from demucs.htdemucs import HTDemucs

    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise BadCheckpoint(f"{name}: args must be a list and kwargs a mapping")
    try:
        model = HTDemucs(*args, **kwargs)
    except TypeError as exc:  # an unknown parameter: demucs would drop it with a warning
        raise BadCheckpoint(f"{name}: the model's parameters are not HTDemucs' ({exc})") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise BadCheckpoint(
            f"{name}: the weights do not match the model"
            + (f"; missing {missing[:3]}" if missing else "")
            + (f"; unexpected {unexpected[:3]}" if unexpected else "")
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise BadCheckpoint(f"{name}: {wrong[0]} is {tuple(state[wrong[0]].shape)}, not {tuple(own[wrong[0]].shape)}")
    model.load_state_dict(state, strict=True)  # half-precision checkpoints copy into the float32 model
    return model.float().eval()


def _read_safetensors(path: Path) -> tuple[str, list, dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        state = {key: file.get_tensor(key) for key in file.keys()}
    if "structure" in metadata:  # diffq-quantized models: not htdemucs, and not supported
        raise BadCheckpoint(f"{path.name} holds a quantized model; only plain weights are supported")
    try:
        klass = metadata["klass"]
        args = decode_json(json.loads(metadata["args"]))
        kwargs = decode_json(json.loads(metadata["kwargs"]))
    except (KeyError, ValueError) as exc:
        raise BadCheckpoint(f"{path.name}: its metadata does not describe a demucs model ({exc})") from None
    return klass, args, kwargs, state


def _read_pickle(path: Path) -> tuple[str, list, dict, dict[str, torch.Tensor]]:
    from demucs.htdemucs import HTDemucs

    sig = demucs_layout.th_signature(path.name)
    if sig is not None and sig[1] is not None:
        # demucs names its checkpoints <sig>-<first 8 hex digits of the file's sha256>.
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        if digest != sig[1]:
            raise BadCheckpoint(f"{path.name} is damaged: its sha256 starts {digest}, its name says {sig[1]}")
    try:
        with torch.serialization.safe_globals([HTDemucs, Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain values, tensors and those two
        raise BadCheckpoint(f"{path.name} is not a demucs checkpoint that loads safely ({exc})") from None
    if not isinstance(package, dict) or not _PICKLE_KEYS <= set(package) <= _PICKLE_KEYS | _PICKLE_OPTIONAL:
        keys = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise BadCheckpoint(f"{path.name} is not a demucs checkpoint {{klass, args, kwargs, state}}: {keys}")
    klass, state = package["klass"], package["state"]
    name = f"{klass.__module__}.{klass.__qualname__}" if isinstance(klass, type) else repr(klass)
    if not isinstance(state, dict) or state.get("__quantized"):
        raise BadCheckpoint(f"{path.name} holds a quantized model; only plain weights are supported")
    return name, package["args"], package["kwargs"], state


def decode_json(value):
    """demucs' JSON for init arguments: fractions (HTDemucs' segment) as {"_type": "fraction", ...}."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: decode_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_json(item) for item in value]
    return value


def encode_json(value):
    """The inverse of decode_json (the tiny writer's)."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {key: encode_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json(item) for item in value]
    return value
