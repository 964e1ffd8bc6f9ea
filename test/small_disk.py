"""A small real disk for full-disk tests: a tmpfs of a few MB mounted on a test's directory.

Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test is skipped with the reason, and
the unit tests' fake full disk (test/unit/test_disk_faults.py) still covers the logic. `fill()`
writes a filler file until the disk says ENOSPC (less `leave` bytes), `free()` removes it, and
`grow()` remounts the disk bigger: space returns without anything being deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MB = 1_000_000


class SmallDisk:
    def __init__(self, path: Path):
        self.path = path
        self.filler = path / ".filler"

    @property
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave: int = 0) -> None:
        """Take every free byte (then give back `leave` of them)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        if leave:
            size = self.filler.stat().st_size
            os.truncate(self.filler, max(0, size - leave))
        assert self.free_bytes <= leave + (1 << 12), f"the disk still has {self.free_bytes} bytes free"

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def grow(self, size_bytes: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(self.path)], check=True)


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[SmallDisk]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) for a full-disk test here")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"no tmpfs for a full-disk test here: {mount.stderr.strip() or mount.returncode}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
