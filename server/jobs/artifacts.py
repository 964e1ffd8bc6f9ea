"""Job artifacts on disk, one folder per job: its input, its answer, and for generation the
native-rate master that other formats come from. Every file is written to a temporary name and
renamed, so a crash never leaves half a file, and a full disk none at all (InsufficientStorage, 507).
Files are 0600 (mkstemp's), in the private data dir."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from lib.files import ARTIFACTS_DIR, DATA_DIR, private_dir, space_errors, write_atomic, write_stream_atomic
from lib.settings import Settings

MASTER = "master.wav"  # native rate, float32, not normalised: other formats are rendered from it
# A job's input (a melody or an audio prompt as float32 at the model's rate; a codec job's upload as
# sent), written when the job is submitted, so a job that runs again after a restart still has it.
INPUT = "input.wav"
UPLOAD = "upload.bin"


def track_name(index: int) -> str:
    """A mix job's input: its track `index` as float32 at its own rate, trimmed (server/serving/mix.py)."""
    return f"track-{index}.wav"


def answer_name(extension: str) -> str:
    """The file of a job's answer: audio.wav, audio.ecdc, audio.json ..."""
    return f"audio{extension}"


class ArtifactStore:
    def __init__(self, root: Path, label: str = DATA_DIR):
        self.root = root
        self.label = label  # what errors call it: the data dir, or AUDIOCRAFT_ARTIFACTS_DIR when set
        private_dir(self.root)

    @classmethod
    def of(cls, settings: Settings) -> ArtifactStore:
        """The artifacts dir of the settings: under the data dir, or AUDIOCRAFT_ARTIFACTS_DIR."""
        return cls(settings.artifacts, DATA_DIR if settings.artifacts_dir is None else ARTIFACTS_DIR)

    def path(self, job_id: str, name: str) -> Path:
        return self.root / job_id / name

    def write(self, job_id: str, name: str, data: bytes) -> Path:
        final = self.path(job_id, name)
        with space_errors(self.label):
            write_atomic(final, data)
        return final

    def write_from(self, job_id: str, name: str, source: BinaryIO) -> Path:
        final = self.path(job_id, name)
        with space_errors(self.label):
            write_stream_atomic(final, source)
        return final

    def read(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def remove(self, job_id: str) -> None:
        folder = self.root / job_id
        if folder.is_dir():
            for item in folder.iterdir():
                item.unlink(missing_ok=True)
            folder.rmdir()
