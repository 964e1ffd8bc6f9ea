"""Where datasets live: <data_dir>/datasets/<name>/ with manifest.json (lib.finetune.DatasetInfo)
and codes.safetensors (one int16 tensor [codebooks, frames] per window, named w0, w1, ...; for a
32 kHz codec also each window's pitch class per chroma frame, int8 [chroma frames], named c0, c1, ...).

A dataset is built in a temporary folder beside the others and renamed into place, so a crash never
leaves half a dataset under its name, and a name holds a complete dataset or nothing. Torch-free:
an API node lists and shows datasets too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from lib.errors import Conflict, NotFound
from lib.files import private_dir
from lib.finetune import DatasetInfo

MANIFEST = "manifest.json"
CODES = "codes.safetensors"
_HIDDEN = "."  # building and trash folders start with it


class DatasetNotFound(NotFound):
    code = "dataset_not_found"

    def __init__(self, name: str):
        super().__init__(f"there is no dataset named '{name}'", field="dataset", hint="GET /api/datasets lists them")


class DatasetExists(Conflict):
    code = "dataset_exists"

    def __init__(self, name: str):
        super().__init__(
            f"a dataset named '{name}' exists",
            field="name",
            hint=f"choose another name, or delete it first (DELETE /api/datasets/{name})",
        )


def root(data_dir: Path) -> Path:
    return private_dir(Path(data_dir) / "datasets")


def folder(data_dir: Path, name: str) -> Path:
    return root(data_dir) / name


def exists(data_dir: Path, name: str) -> bool:
    return (folder(data_dir, name) / MANIFEST).is_file()


def read(data_dir: Path, name: str) -> DatasetInfo:
    try:
        text = (folder(data_dir, name) / MANIFEST).read_text()
    except (OSError, ValueError):
        raise DatasetNotFound(name) from None
    return DatasetInfo.model_validate_json(text)


def all_datasets(data_dir: Path) -> list[DatasetInfo]:
    out = []
    for entry in sorted(root(data_dir).iterdir()):
        if entry.name.startswith(_HIDDEN) or not (entry / MANIFEST).is_file():
            continue
        try:
            out.append(read(data_dir, entry.name))
        except (DatasetNotFound, ValueError):  # a manifest another version wrote: not listed
            continue
    return out


def staging(data_dir: Path) -> Path:
    """A fresh folder to build a dataset in (on the datasets' own disk, so it renames into place)."""
    path = root(data_dir) / f"{_HIDDEN}building-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def install(data_dir: Path, built: Path, name: str) -> Path:
    """Rename a built folder into place; DatasetExists when the name was taken meanwhile."""
    target = folder(data_dir, name)
    try:
        os.rename(built, target)  # fails on an existing non-empty folder: never replaces one
    except OSError:
        if target.exists():
            raise DatasetExists(name) from None
        raise
    return target


def delete(data_dir: Path, name: str) -> None:
    target = folder(data_dir, name)
    if not (target / MANIFEST).is_file():
        raise DatasetNotFound(name)
    trash = root(data_dir) / f"{_HIDDEN}trash-{uuid.uuid4().hex[:12]}"
    os.rename(target, trash)  # gone from its name at once, whatever the removal takes
    shutil.rmtree(trash, ignore_errors=True)


def windows(data_dir: Path, name: str) -> list[dict]:
    """The dataset's windows in order: {file, start_s, frames, caption}; tensor i of codes.safetensors
    is window i."""
    import json

    try:
        manifest = json.loads((folder(data_dir, name) / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DatasetNotFound(name) from None
    return list(manifest.get("window_list", []))
