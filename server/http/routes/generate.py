"""POST /api/generate/*: parse, hand to serving, then wait for the job (or answer 202 with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.schemas import ContinuationRequest, JobAccepted, MelodyRequest, MusicRequest, SoundRequest, StyleRequest
from server.audio.encode import FILE_EXTENSIONS
from server.http.payload import close_files, read_fields
from server.http.routes.answers import failed_response
from server.http.routes.stream import stream_job
from server.jobs.artifacts import answer_name
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.serving import generation, streaming

if TYPE_CHECKING:
    from server.audio.render import RenderedAudio
    from server.services import Services


# The headers of a generation's audio answer (and the OpenAPI document's list of them).
AUDIO_HEADERS: dict[str, str] = {
    "X-Job-Id": "The job",
    "X-Seed": "The seed it was generated with",
    "X-Model": "The model",
    "X-Duration-S": "Seconds of audio",
    "X-Sample-Rate": "Sample rate of the answer",
    "X-Generation-Time-S": "Seconds the generation took",
    "X-Watermark": "The watermark the audio carries: audioseal, or none",
}


def job_location(job: Job) -> str:
    return f"/api/jobs/{job.id}"


def accepted(svc: Services, job: Job) -> JSONResponse:
    body = JobAccepted(job=job.view(svc.scheduler.position(job)), location=job_location(job))
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": job_location(job)})


def audio_response(svc: Services, job: Job, rendered: RenderedAudio | None = None) -> Response:
    """The job's stored answer, or `rendered` (another format of it) when given."""
    assert job.result is not None
    if rendered is None:
        extension = FILE_EXTENSIONS[job.result.format]
        data, media_type = svc.scheduler.artifacts.read(job.id, answer_name(extension)), job.result.media_type
    else:
        extension, data, media_type = rendered.extension, rendered.data, rendered.media_type
    facts = (
        job.id,
        str(job.seed),
        job.model,
        f"{job.result.duration_s:.6g}",
        str(rendered.sample_rate if rendered else job.result.sample_rate),
        f"{job.generation_time_s or 0.0:.3f}",
        job.result.info.get("watermark", "none"),
    )
    headers = dict(zip(AUDIO_HEADERS, facts, strict=True))
    headers["Content-Disposition"] = f'attachment; filename="{job.id}{extension}"'
    return Response(data, media_type=media_type, headers=headers)


async def answer(svc: Services, job: Job, is_async: bool, render=audio_response) -> Response:
    """202 with the job, or wait for it and answer with its result (or its error)."""
    if is_async:
        return accepted(svc, job)
    await svc.scheduler.wait(job)
    return render(svc, job) if job.state == "succeeded" else failed_response(job)


async def _generate(request: Request, kind: str, schema: type[BaseModel]) -> Response:
    svc: Services = request.app.state.services
    fields, files = await read_fields(request, svc.settings, schema)
    try:
        req = schema.model_validate(fields, context=svc.context)
        job = await generation.generate(svc, kind, req, files, PRIORITY_INTERACTIVE)
    finally:
        await close_files(files)
    if req.stream and not req.async_:
        return await stream_job(request, svc, job, streaming.stream_options(job, {}), owner=True)
    return await answer(svc, job, req.async_)


async def generate_music(request: Request) -> Response:
    return await _generate(request, "music", MusicRequest)


async def generate_sound(request: Request) -> Response:
    return await _generate(request, "sound", SoundRequest)


async def generate_melody(request: Request) -> Response:
    return await _generate(request, "melody", MelodyRequest)


async def generate_style(request: Request) -> Response:
    return await _generate(request, "style", StyleRequest)


async def generate_continuation(request: Request) -> Response:
    return await _generate(request, "continuation", ContinuationRequest)
