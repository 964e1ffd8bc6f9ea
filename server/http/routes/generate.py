"""POST /api/generate/*: parse, hand to serving, then wait for the job (or answer 202 with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.errors import Conflict
from lib.schemas import INPUT_FIELDS, ContinuationRequest, JobAccepted, MelodyRequest, MusicRequest, SoundRequest
from server.audio.encode import FILE_EXTENSIONS
from server.http.errors import to_response
from server.http.payload import close_files, read_fields
from server.jobs.artifacts import answer_name
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.serving import generation

if TYPE_CHECKING:
    from server.audio.render import RenderedAudio
    from server.services import Services


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
    headers = {
        "X-Job-Id": job.id,
        "X-Seed": str(job.seed),
        "X-Model": job.model,
        "X-Duration-S": f"{job.result.duration_s:.6g}",
        "X-Sample-Rate": str(rendered.sample_rate if rendered else job.result.sample_rate),
        "X-Generation-Time-S": f"{job.generation_time_s or 0.0:.3f}",
        "Content-Disposition": f'attachment; filename="{job.id}{extension}"',
    }
    return Response(data, media_type=media_type, headers=headers)


def failed_response(job: Job) -> JSONResponse:
    if job.state == "cancelled":
        error = Conflict(f"job {job.id} was cancelled before it finished", code="cancelled")
    else:
        assert job.error is not None
        error = job.error.as_error()
    response = to_response(error)
    response.headers["X-Job-Id"] = job.id
    return response


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
        req = schema.model_validate(fields, context=svc.limits)
        job = await generation.generate(svc, kind, req, files, PRIORITY_INTERACTIVE)
    finally:
        await close_files(files)
    return await answer(svc, job, req.async_)


async def generate_music(request: Request) -> Response:
    return await _generate(request, "music", MusicRequest)


async def generate_sound(request: Request) -> Response:
    return await _generate(request, "sound", SoundRequest)


async def generate_melody(request: Request) -> Response:
    return await _generate(request, "melody", MelodyRequest)


async def generate_continuation(request: Request) -> Response:
    return await _generate(request, "continuation", ContinuationRequest)


def document_uploads(document: dict) -> None:
    """Multipart bodies of the endpoints that take input audio: the fields plus the file field."""
    for path, kind in (("/api/generate/melody", "melody"), ("/api/generate/continuation", "continuation")):
        op = document.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        field = INPUT_FIELDS[kind]
        content = op["requestBody"]["content"]
        fields = content["multipart/form-data"]["schema"]
        upload = {"type": "string", "format": "binary", "description": f"The {field} audio file"}
        content["multipart/form-data"]["schema"] = {
            "allOf": [fields, {"type": "object", "properties": {field: upload}}]
        }
