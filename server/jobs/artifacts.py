"""Job artifacts on disk: the rendered answer, and the native-rate master that other formats come from.
Every file is written to a temporary name and renamed, so a crash never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str, name: str) -> Path:
        return self.root / job_id / name

    def write(self, job_id: str, name: str, data: bytes) -> Path:
        final = self.path(job_id, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def read(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def remove(self, job_id: str) -> None:
        folder = self.root / job_id
        if folder.is_dir():
            for item in folder.iterdir():
                item.unlink(missing_ok=True)
            folder.rmdir()
