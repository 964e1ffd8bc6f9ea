"""The on-disk layout of a Demucs model (htdemucs), read without torch.

A demucs model is a bag of one or more separators, as the demucs package (4.1) publishes it:

    <name>.yaml                 the bag: {models: [<signature>, ...], weights: ..., segment: ...}
    <signature>.safetensors     one per model: tensors, with klass/args/kwargs as JSON in the metadata
                                (the hub layout demucs 4.1 downloads)
    <signature>-<sha256[:8]>.th or <signature>.th
                                the same model as a torch pickle {klass, args, kwargs, state}: the
                                legacy format of demucs' own repo (`demucs.pretrained.get_model` with
                                `repo=`), which `models import` takes as it is

The store counts a snapshot as installed when its bag names only signatures it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lib.errors import Invalid

_SIGNATURE = re.compile(r"^[0-9a-f]{8}$")
_TH_NAME = re.compile(r"^(?P<sig>[0-9a-f]{8})(-(?P<hash>[0-9a-f]{8}))?\.th$")


class BadBag(Invalid, ValueError):
    """The bag file is not one demucs reads; the message names the field."""

    code = "bad_demucs_bag"


@dataclass(frozen=True)
class Bag:
    models: tuple[str, ...]  # signatures
    weights: tuple[tuple[float, ...], ...] | None  # per model, per source; None: all ones
    segment: float | None  # overrides the models' segment (seconds)


def bag_file(snapshot: Path, name: str | None = None) -> Path | None:
    """`<name>.yaml`, or the one .yaml of the snapshot when no name is given."""
    if name is not None:
        path = snapshot / f"{name}.yaml"
        return path if path.is_file() else None
    found = sorted(p for p in snapshot.glob("*.yaml") if p.is_file())
    return found[0] if len(found) == 1 else None


def read_bag(path: Path) -> Bag:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadBag(f"{path.name} is not a demucs bag: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise BadBag(f"{path.name} is not a demucs bag: it has no list of models")
    models = tuple(str(m) for m in data["models"])
    bad = [m for m in models if not _SIGNATURE.match(m)]
    if bad:
        raise BadBag(f"{path.name}: {bad[0]!r} is not a model signature (8 hex digits)")
    unknown = set(data) - {"models", "weights", "segment"}
    if unknown:
        raise BadBag(f"{path.name}: unknown bag field {sorted(unknown)[0]!r}")
    weights = data.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(models):
            raise BadBag(f"{path.name}: weights must give one list per model")
        weights = tuple(tuple(float(w) for w in row) for row in weights)
    segment = data.get("segment")
    return Bag(models, weights, None if segment is None else float(segment))


def model_file(snapshot: Path, signature: str) -> Path | None:
    """The weights of one model of the bag: its safetensors, else its pickle."""
    path = snapshot / f"{signature}.safetensors"
    if path.is_file():
        return path
    for path in sorted(snapshot.glob(f"{signature}*.th")):
        match = _TH_NAME.match(path.name)
        if match and match["sig"] == signature and path.is_file():
            return path
    return None


def th_signature(filename: str) -> tuple[str, str | None] | None:
    """(signature, checksum prefix or None) of a legacy checkpoint's file name, or None."""
    match = _TH_NAME.match(filename)
    return (match["sig"], match["hash"]) if match else None


def is_complete(snapshot: Path) -> bool:
    path = bag_file(snapshot)
    if path is None:
        return False
    try:
        bag = read_bag(path)
    except BadBag:
        return False
    return all(model_file(snapshot, sig) is not None for sig in bag.models)


def needed_files(names: set[str]) -> list[str]:
    """Out of a repo listing: the bag, the models' files and the README (the repo holds one bag)."""
    keep = [n for n in names if "/" not in n and (n.endswith((".yaml", ".safetensors")) or _TH_NAME.match(n))]
    return sorted(keep + (["README.md"] if "README.md" in names else []))
