"""Which lane runs which kinds of job, and the request schema each kind carries. Torch-free: an API
node, which runs no lane, reads it to store, list and show every kind of job."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from lib.finetune import DatasetJob, FinetuneJob
from lib.schemas import (
    ContinuationRequest,
    DecodeJob,
    DownloadRequest,
    EncodeJob,
    MelodyRequest,
    MixRequest,
    MusicRequest,
    SoundRequest,
    StyleRequest,
    WatermarkDetectRequest,
)

if TYPE_CHECKING:
    from server.jobs.job import Job

DECODE = {
    "music": MusicRequest,
    "sound": SoundRequest,
    "melody": MelodyRequest,
    "continuation": ContinuationRequest,
    "style": StyleRequest,
}
CODEC = {"encode": EncodeJob, "decode": DecodeJob}
DOWNLOAD = {"download": DownloadRequest}
MIX = {"mix": MixRequest}
DATASET = {"dataset": DatasetJob}
FINETUNE = {"finetune": FinetuneJob}
WATERMARK = {"detect": WatermarkDetectRequest}

# lane name -> its kinds: server/jobs/lanes/{decode,codec,download,mix,dataset,finetune,watermark}.py
LANES = {
    "decode": DECODE,
    "codec": CODEC,
    "download": DOWNLOAD,
    "mix": MIX,
    "dataset": DATASET,
    "finetune": FINETUNE,
    "watermark": WATERMARK,
}


def batch_group(job: Job) -> Hashable:
    """The decode lane's group (Lane.group): one batch holds one kind and one model."""
    return (job.kind, job.model)


# lane name -> its Lane.group, for a node that does not run the lane (an API node's Retry-After)
GROUPS: dict[str, Callable[[Job], Hashable | None]] = {"decode": batch_group}
