"""A job's audio answer, kept as every lane that makes audio keeps it: the native-rate master (float32,
not normalised: other formats are rendered from it) and the answer the request asked for."""

from __future__ import annotations

import numpy as np

from lib.errors import Invalid
from lib.schemas import JobResult
from server.audio.encode import encode_audio
from server.audio.render import render
from server.jobs.artifacts import MASTER, ArtifactStore, answer_name
from server.jobs.job import Job


def keep_audio(
    artifacts: ArtifactStore, job: Job, audio: np.ndarray, sample_rate: int, info: dict[str, str] | None = None
) -> None:
    """Render `audio` as the job's request asks (its OutputOptions), keep it with the master and end the job:
    succeeded, or failed when the request's format cannot hold it (render_failed). A full disk raises
    InsufficientStorage (507) and leaves no half answer. A stream's job keeps the file its format
    stands for (`file_format`: a pcm stream keeps a wav). `info`: facts of the answer for its result
    (a watermark's)."""
    options = job.request.model_copy(update={"format": job.request.file_format})
    try:
        rendered = render(audio, sample_rate, options)
    except ValueError as exc:
        job.finish("failed", Invalid(str(exc), code="render_failed"))
        return
    master, _ = encode_audio(audio, sample_rate, "wav", 32)
    artifacts.write(job.id, MASTER, master)
    try:
        artifacts.write(job.id, answer_name(rendered.extension), rendered.data)
    except BaseException:
        artifacts.path(job.id, MASTER).unlink(missing_ok=True)  # no half answer holds the space
        raise
    job.result = JobResult(
        media_type=rendered.media_type,
        format=options.format,
        sample_rate=rendered.sample_rate,
        channels=rendered.channels,
        duration_s=round(rendered.duration_s, 6),
        size_bytes=len(rendered.data),
        info=info or {},
    )
    job.finish("succeeded")
