"""Which lane runs which kinds of job, and the request schema each kind carries. Torch-free: an API
node, which runs no lane, reads it to store, list and show every kind of job."""

from __future__ import annotations

from lib.schemas import (
    ContinuationRequest,
    DecodeJob,
    DownloadRequest,
    EncodeJob,
    MelodyRequest,
    MusicRequest,
    SoundRequest,
)

DECODE = {"music": MusicRequest, "sound": SoundRequest, "melody": MelodyRequest, "continuation": ContinuationRequest}
CODEC = {"encode": EncodeJob, "decode": DecodeJob}
DOWNLOAD = {"download": DownloadRequest}

# lane name -> its kinds: server/jobs/lanes/{decode,codec,download}.py
LANES = {"decode": DECODE, "codec": CODEC, "download": DOWNLOAD}
