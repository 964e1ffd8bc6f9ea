"""Streaming answers: a generation job's audio, encoded as it is made (server/audio/outstream.py).

The blocks come from the job's feed (JobQueue.follow: in this process, or from Redis on an API
node), from the first one: a reader that comes late gets what was made so far at once, then the
rest as it comes. A job that streams nothing (it was not asked to stream, or it had ended before the
reader came) is sent from its stored answer once it has ended: its native-rate master, the very
samples its stream carried. Streams are never normalised: loudness needs the whole audio, so the
stream carries the model's output as made (integer formats clipped to [-1, 1]), and the job's stored
answer (GET /api/jobs/{id}/audio) is normalised as the request asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from starlette.concurrency import run_in_threadpool

from lib.catalogue import get_spec
from lib.errors import Conflict
from lib.schemas import StreamFormat, StreamOptions
from server.audio.outstream import AudioStreamEncoder, StreamedAudio, stream_rate
from server.jobs.artifacts import MASTER
from server.jobs.feed import streams
from server.jobs.job import Job
from server.jobs.kinds import DECODE

if TYPE_CHECKING:
    from server.services import Services

MASTER_BLOCK_S = 1.0  # a stored answer goes out in blocks of this many seconds


def stream_options(job: Job, overrides: dict[str, Any]) -> StreamOptions:
    """The job's own output options (a format that cannot stream becomes wav), under `overrides`."""
    request = job.request
    own = {"format": request.format if request.format in get_args(StreamFormat) else "wav"}
    own |= {"sample_rate": request.sample_rate, "bit_depth": request.bit_depth}
    return StreamOptions.model_validate({**own, **overrides})


def stream_format(job: Job, options: StreamOptions) -> StreamedAudio:
    spec = get_spec(job.model)
    asked = spec.sample_rate if options.sample_rate == "native" else int(options.sample_rate)
    return StreamedAudio(options.format, stream_rate(options.format, asked), spec.channels, options.bit_depth)


async def _blocks(svc: Services, job: Job) -> AsyncIterator[np.ndarray]:
    """The job's audio at the model's rate: its feed while it runs, else its stored master."""
    spec = get_spec(job.model)
    follow = svc.scheduler.follow(job, spec.channels) if streams(job.request) else None
    sent = 0
    if follow is not None:
        async for block in follow:
            sent += block.shape[-1]
            yield block
    if sent:
        return
    if not job.finished:
        await svc.scheduler.wait(job)
    if job.state != "succeeded":
        return
    audio = await run_in_threadpool(_read_master, svc, job)
    step = max(1, round(MASTER_BLOCK_S * spec.sample_rate))
    for start in range(0, audio.shape[-1], step):
        yield audio[:, start : start + step]


def _read_master(svc: Services, job: Job) -> np.ndarray:
    from server.audio.decode import read_audio

    audio, _rate = read_audio(svc.scheduler.artifacts.read(job.id, MASTER))
    return audio


async def open_stream(svc: Services, job: Job, out: StreamedAudio) -> AsyncIterator[bytes] | None:
    """The stream's bytes, once its first audio is there (so that a job failing before it makes any
    answers with its error, not with an empty 200); None when the job ended without audio."""
    blocks = _blocks(svc, job)
    first = await anext(blocks, None)
    if first is None:
        return None
    encoder = AudioStreamEncoder(out, get_spec(job.model).sample_rate)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield encoder.start() + await run_in_threadpool(encoder.push, first)
            async for block in blocks:
                data = await run_in_threadpool(encoder.push, block)
                if data:
                    yield data
            yield await run_in_threadpool(encoder.finish)
        finally:
            await blocks.aclose()

    return body()


def check_streamable(job: Job) -> None:
    """Only a generation job's audio streams (409 for the others)."""
    if job.kind not in DECODE:
        raise Conflict(
            f"job {job.id} is a {job.kind} job: it has no audio to stream",
            code="no_audio",
            hint=f"GET /api/jobs/{job.id}/audio",
        )
