"""Writing files so that a crash never leaves half of one: a temporary file beside the target,
flushed to disk, then renamed over it. Also: directories only their owner can read, and a full disk
told apart from other failures (it is the disk's state, not a bug: a 507 that passes by itself)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lib.errors import InsufficientStorage

# What the errors name, never the absolute path: answers do not show the host's layout.
DATA_DIR = "the data dir (AUDIOCRAFT_DATA_DIR)"
ARTIFACTS_DIR = "the artifacts dir (AUDIOCRAFT_ARTIFACTS_DIR)"
MODELS_DIR = "the models dir (AUDIOCRAFT_MODELS_DIR, or the Hugging Face hub cache)"
TEMP_DIR = "the temporary dir (TMPDIR)"


def disk_full(exc: BaseException) -> bool:
    """Whether a failure is a full disk (or an exhausted quota): ENOSPC, EDQUOT, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def reason(exc: BaseException) -> str:
    """What went wrong, without the file's path (an OSError's text names it): for answers."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def no_space(where: str) -> InsufficientStorage:
    return InsufficientStorage(
        f"no space left on the disk of {where}",
        code="disk_full",
        hint="free some space on that disk; the service goes on by itself once there is room (no restart)",
    )


@contextlib.contextmanager
def space_errors(where: str) -> Iterator[None]:
    """A full disk inside the block becomes InsufficientStorage (507) naming `where`; any other error passes."""
    try:
        yield
    except Exception as exc:
        if disk_full(exc):
            raise no_space(where) from exc
        raise


def private_dir(path: Path) -> Path:
    """Make a directory that only its owner may enter (0700); one that exists and is ours is narrowed to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    _owner_only(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create an empty file only its owner may read (0600) unless it exists; one that is ours is narrowed to it."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    _owner_only(path, 0o600)
    return path


def _owner_only(path: Path, mode: int) -> None:
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


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
