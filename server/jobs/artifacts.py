"""Job artifacts on disk: the rendered answer, and the native-rate master that other formats come from.
Every file is written to a temporary name and renamed, so a crash never leaves half a file."""

from __future__ import annotations

from pathlib import Path

from lib.files import write_atomic


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str, name: str) -> Path:
        return self.root / job_id / name

    def write(self, job_id: str, name: str, data: bytes) -> Path:
        final = self.path(job_id, name)
        write_atomic(final, data)
        return final

    def read(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def remove(self, job_id: str) -> None:
        folder = self.root / job_id
        if folder.is_dir():
            for item in folder.iterdir():
                item.unlink(missing_ok=True)
            folder.rmdir()
