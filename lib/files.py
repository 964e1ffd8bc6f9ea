"""Writing files so that a crash never leaves half of one: a temporary file beside the target,
flushed to disk, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _write_with(target: Path, fill: Callable[[BinaryIO], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(target: Path, data: bytes) -> None:
    _write_with(target, lambda out: out.write(data))


def write_stream_atomic(target: Path, source: BinaryIO) -> None:
    """Copy a readable file object from its current position to its end."""
    _write_with(target, lambda out: shutil.copyfileobj(source, out, 1 << 20))


def copy_atomic(source: Path, target: Path) -> None:
    with open(source, "rb") as inp:
        write_stream_atomic(target, inp)
