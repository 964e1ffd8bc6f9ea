"""The converted copy of an audiocraft export, kept beside the original in the hub cache:

    models--facebook--audiogen-medium/
        snapshots/<rev>/state_dict.bin, compression_state_dict.bin    the original (hub layout)
        converted/v<N>-<rev>-<t5 rev>/config.json, model.safetensors, tokenizer...

keyed by the export's snapshot revision and the T5 repo's, and by the converter's version, so a new
download, a new T5 or a changed converter each convert again. The copy is written into a temporary
folder beside it and renamed into place: a crash never leaves a half-written copy that looks done,
and two processes converting at once both end up with one complete copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from server.models.convert.audiocraft_export import convert_export

log = logging.getLogger("audiocraft.engine")

# Bump when the conversion's output changes.
CONVERTER_VERSION = 1


def converted_dir(snapshot: Path, t5_snapshot: Path, mert_snapshot: Path | None = None) -> Path:
    """Where the converted copy of this export (with this T5, and a style model's MERT) lives."""
    repo_dir = snapshot.parent.parent
    mert = "" if mert_snapshot is None else f"-{mert_snapshot.name}"
    return repo_dir / "converted" / f"v{CONVERTER_VERSION}-{snapshot.name}-{t5_snapshot.name}{mert}"


def ensure_converted(snapshot: Path, t5_snapshot: Path, mert_snapshot: Path | None = None) -> Path:
    """The converted copy's folder, converting first when there is none."""
    target = converted_dir(snapshot, t5_snapshot, mert_snapshot)
    return converted_copy(
        target, "config.json", lambda out: convert_export(snapshot, t5_snapshot, out, mert_snapshot), snapshot
    )


def converted_copy(target: Path, marker: str, convert: Callable[[Path], None], source: Path) -> Path:
    """`target`, written by `convert(folder)` first when it has no `marker` file: into a staging
    folder beside it, renamed into place whole."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        log.info("converting %s into %s", source, target)
        convert(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / marker).is_file():  # not another process's finished copy: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
