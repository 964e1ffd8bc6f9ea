"""POST /api/generate/*: validate, turn into a job, then wait for it (or answer 202 with it)."""

from __future__ import annotations

import secrets

from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.catalogue import get_spec
from lib.errors import Conflict, Invalid
from lib.schemas import MAX_SEED, ContinuationRequest, JobAccepted, MelodyRequest, MusicRequest, SoundRequest
from server.audio.encode import FILE_EXTENSIONS
from server.engine.errors import UnsupportedRequest
from server.http.errors import to_response
from server.http.payload import read_fields
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.jobs.kinds import INPUT_FIELDS
from server.jobs.runner import answer_name
from server.services import Services


def job_location(job: Job) -> str:
    return f"/api/jobs/{job.id}"


def accepted(svc: Services, job: Job) -> JSONResponse:
    body = JobAccepted(job=job.view(svc.scheduler.position(job)), location=job_location(job))
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": job_location(job)})


def audio_response(svc: Services, job: Job, rendered=None) -> Response:
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


def make_job(svc: Services, kind: str, request: BaseModel, model: str, priority: int) -> Job:
    """Checks that need the server's state (model known, installed, able), then a queued-ready job.
    A model that is not installed is downloaded first (settings.auto_download): the job waits for it."""
    spec = get_spec(model)
    if kind not in spec.capabilities:
        raise UnsupportedRequest(f"{spec.name} cannot make {kind}", field="model")
    if getattr(request, "stream", False):
        raise UnsupportedRequest(
            "streaming is not available yet", hint='use "async": true and poll the job', field="stream"
        )
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED)
    job = Job(kind=kind, model=spec.name, request=request, seed=seed, priority=priority)
    if not svc.registry.is_loaded(spec.name):
        job.waits_for = svc.downloads.require(spec)
    return job


async def prepare_job(
    svc: Services, kind: str, request: BaseModel, files: dict[str, UploadFile], model: str, priority: int
) -> Job:
    """make_job, plus the kind's input audio (melody, audio prompt): read, checked and kept with the
    job. The stored request keeps references only, not the base64 audio."""
    from server.http.inputs import input_audio, keep_input

    field = INPUT_FIELDS.get(kind)
    if field is None:
        if files:
            raise Invalid(f"{kind} generation takes no file upload", field=next(iter(files)))
        return make_job(svc, kind, request, model, priority)
    extra = set(files) - {field}
    if extra:
        raise Invalid(f"unknown file field '{extra.pop()}'", hint=f"send the file as '{field}'")
    job = make_job(svc, kind, request.model_copy(update={field: None}), model, priority)
    spec = get_spec(job.model)
    keep_input(svc, job, await input_audio(svc, spec, request, files, field), spec.sample_rate)
    return job


async def run_or_accept(svc: Services, job: Job, is_async: bool) -> Response:
    try:
        svc.scheduler.submit(job)
    except Exception:
        svc.scheduler.artifacts.remove(job.id)  # its input audio, if any
        raise
    if is_async:
        return accepted(svc, job)
    await svc.scheduler.wait(job)
    return audio_response(svc, job) if job.state == "succeeded" else failed_response(job)


def default_model(svc: Services, kind: str) -> str:
    """The settings' model for a job kind when the request names none."""
    settings = svc.settings
    return {"sound": settings.default_sound_model, "melody": settings.default_melody_model}.get(
        kind, settings.default_music_model
    )


async def _generate(request: Request, kind: str, schema: type[BaseModel]) -> Response:
    svc: Services = request.app.state.services
    fields, files = await read_fields(request, int(svc.settings.max_upload_mb * 1e6))
    req = schema.model_validate(fields, context=svc.limits)
    job = await prepare_job(svc, kind, req, files, req.model or default_model(svc, kind), PRIORITY_INTERACTIVE)
    return await run_or_accept(svc, job, req.async_)


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
