"""POST /api/watermark/detect: parse (JSON, or multipart with the file part `audio`), hand to serving,
then answer with the detection job's verdict (or 202 with the job)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from lib.schemas import WatermarkDetectRequest
from server.http.payload import close_files, read_fields
from server.http.routes.generate import answer
from server.jobs.job import Job
from server.serving import watermark

if TYPE_CHECKING:
    from server.services import Services

UPLOAD = "The audio to check: an audio file (wav, mp3, flac, ogg or m4a; any rate and channels), or give audio_job "
UPLOAD += "or audio_content instead"


def _verdict(svc: Services, job: Job) -> Response:
    """The job's answer: the WatermarkDetection JSON it kept."""
    assert job.result is not None and job.result.file is not None
    data = svc.scheduler.artifacts.read(job.id, job.result.file)
    return Response(data, media_type=job.result.media_type, headers={"X-Job-Id": job.id})


async def detect(request: Request) -> Response:
    svc: Services = request.app.state.services
    fields, files = await read_fields(request, svc.settings, WatermarkDetectRequest, max_files=1)
    try:
        req = WatermarkDetectRequest.model_validate(fields, context=svc.context)
        job = await watermark.detect(svc, req, files)
    finally:
        await close_files(files)
    return await answer(svc, job, req.async_, _verdict)
