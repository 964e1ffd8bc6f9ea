"""Reading torch checkpoints whose pickles hold OmegaConf configs, without OmegaConf and without
unpickling anything but data.

AudioSeal's published checkpoints keep their config as OmegaConf DictConfig objects, which
`torch.load(weights_only=True)` refuses. Rather than unpickle arbitrary objects (weights_only=False)
the restricted unpickler is given stand-ins under OmegaConf's class names: plain classes whose
instances only hold the pickled attributes, turned into dicts, lists and values by `plain`. A
checkpoint naming any other global still fails, as weights_only intends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class _Container:
    """A DictConfig or ListConfig: its pickled state (_content, _metadata, _parent) as attributes."""


class _Node:
    """A value node (AnyNode, StringNode, ...): its value is `_val`."""


class _Metadata:
    """ContainerMetadata / Metadata: typing facts with no bearing on the values."""


class _TypeRef:
    """A type named in the metadata (typing.Any, dict, int, ...)."""


def _defaultdict(*_args: Any) -> dict:
    return {}


_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode")
_STAND_INS: list[tuple[Any, str]] = [
    (_Container, "omegaconf.dictconfig.DictConfig"),
    (_Container, "omegaconf.listconfig.ListConfig"),
    (_Metadata, "omegaconf.base.ContainerMetadata"),
    (_Metadata, "omegaconf.base.Metadata"),
    (_defaultdict, "collections.defaultdict"),
    *[(_Node, f"omegaconf.nodes.{name}") for name in _NODES],
    *[(_TypeRef, name) for name in ("typing.Any", "builtins.dict", "builtins.list", "builtins.int", "builtins.str")],
    *[(_TypeRef, name) for name in ("builtins.float", "builtins.bool", "builtins.object")],
]


def load(path: Path) -> Any:
    """The checkpoint at `path`, OmegaConf configs as stand-ins (see `plain`)."""
    with torch.serialization.safe_globals(_STAND_INS):
        return torch.load(path, map_location="cpu", weights_only=True)


def plain(value: Any) -> Any:
    """`value` with every OmegaConf stand-in replaced by the dict, list or value it holds."""
    if isinstance(value, _Container):
        content = getattr(value, "_content", None)
        return plain(content)
    if isinstance(value, _Node):
        return plain(getattr(value, "_val", None))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, _Metadata | _TypeRef):
        raise ValueError("an OmegaConf metadata object where a value belongs")
    return value


def root(value: Any) -> dict[str, Any]:
    """The whole config an OmegaConf stand-in was cut from (its `_parent` chain's top), as plain
    data; {} for anything else. References inside a sub-config resolve against it."""
    top = None
    node = value
    while isinstance(node, _Container):
        top, node = node, getattr(node, "_parent", None)
    found = plain(top) if top is not None else None
    return found if isinstance(found, dict) else {}


def find_container(value: Any) -> Any:
    """The first OmegaConf stand-in inside a dict (or the value itself), if any."""
    if isinstance(value, _Container):
        return value
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, _Container):
                return item
    return None
