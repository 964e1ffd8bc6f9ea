"""Streamed audio: a generation request with "stream": true, and GET /api/jobs/{id}/stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from lib.catalogue import WATERMARK_MODEL
from lib.errors import ServiceError
from lib.schemas import StreamOptions
from server.audio.outstream import StreamedAudio
from server.http.payload import from_strings
from server.http.routes.answers import failed_response
from server.jobs.job import Job
from server.serving import streaming

if TYPE_CHECKING:
    from server.services import Services

T = TypeVar("T")

# The headers of a streamed answer (and the OpenAPI document's list of them).
STREAM_HEADERS: dict[str, str] = {
    "X-Job-Id": "The job",
    "X-Seed": "The seed it is generated with",
    "X-Model": "The model",
    "X-Duration-S": "Seconds of audio asked for",
    "X-Sample-Rate": "Sample rate of the stream",
    "X-Channels": "Channels of the stream",
    "X-Sample-Format": "wav and pcm: s16le, s24le or f32le (interleaved)",
    "X-Watermark": "The watermark the audio carries: audioseal, or none",
}


class JobStream(StreamingResponse):
    """A streamed answer that runs `on_abort` when it does not reach its end: the client went away
    (Starlette stops the body when it hears the disconnect), or sending failed."""

    def __init__(self, body: AsyncIterator[bytes], on_abort: Callable[[], None] | None, **kwargs):
        self.completed = False
        self._on_abort = on_abort

        async def tracked() -> AsyncIterator[bytes]:
            async for chunk in body:
                yield chunk
            self.completed = True

        self._body = body
        super().__init__(tracked(), **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.completed and self._on_abort is not None:
                with contextlib.suppress(ServiceError):  # the queue is away too: the job's own end decides
                    self._on_abort()
            await self._body.aclose()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_gone(request: Request, work: Awaitable[T], on_gone: Callable[[], None] | None) -> T:
    """`work`, unless the client goes away first (then `on_gone`, and ClientDisconnect: nobody hears
    the answer)."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    if on_gone is not None:
        on_gone()
    raise ClientDisconnect()


def headers(job: Job, out: StreamedAudio) -> dict[str, str]:
    facts = (job.id, str(job.seed), job.model, f"{job.request.duration:.6g}", str(out.sample_rate), str(out.channels))
    answer = dict(zip(STREAM_HEADERS, facts, strict=False))
    if out.sample_format is not None:
        answer["X-Sample-Format"] = out.sample_format
    answer["X-Watermark"] = WATERMARK_MODEL if getattr(job.request, "watermark", False) else "none"
    answer["Cache-Control"] = "no-cache"
    return answer


async def stream_job(request: Request, svc: Services, job: Job, options: StreamOptions, owner: bool) -> Response:
    """The job's audio as a chunked answer, as soon as its first audio is there. `owner`: the request
    that submitted the job; its client going away cancels the job (at its next decode step)."""
    out = streaming.stream_format(job, options)
    cancel = (lambda: svc.scheduler.cancel(job.id)) if owner else None
    body = await unless_gone(request, streaming.open_stream(svc, job, out), cancel)
    if body is None:  # it ended before it made any audio
        job = svc.scheduler.get(job.id)
        return failed_response(job, status=None if owner else 409)
    return JobStream(body, cancel, media_type=out.media_type, headers=headers(job, out))


async def job_stream(request: Request) -> Response:
    """GET /api/jobs/{id}/stream?format=&sample_rate=&bit_depth=: from its start while it runs (what
    was made so far at once), the whole audio once it has finished."""
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    streaming.check_streamable(job)
    query = {k: v for k, v in request.query_params.items() if k in StreamOptions.model_fields}
    options = streaming.stream_options(job, from_strings(StreamOptions, query))
    return await stream_job(request, svc, job, options, owner=False)
