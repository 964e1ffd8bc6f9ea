"""Watermark detection requests as jobs of the watermark lane (server/jobs/lanes/watermark.py).

The audio (an upload, base64, an earlier job's audio or a content item) is read and checked before
the job exists, so a bad file is a 4xx and never a failed job, then kept with the job (artifacts
INPUT, at its own rate and channels); the stored request keeps references only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import UploadFile

from lib.catalogue import WATERMARK_MODEL, get_spec
from lib.errors import Invalid
from lib.schemas import WatermarkDetectRequest
from server.engine.errors import UnsupportedRequest
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.serving import downloads
from server.serving.inputs import keep_input, source_audio

if TYPE_CHECKING:
    from server.services import Services

KIND = "detect"
FIELD = "audio"


async def detect(svc: Services, request: WatermarkDetectRequest, files: dict[str, UploadFile]) -> Job:
    svc.scheduler.check_space()
    extra = set(files) - {FIELD}
    if extra:
        raise Invalid(f"unknown file field '{extra.pop()}'", hint=f"send the audio as '{FIELD}'")
    spec = get_spec(request.model or WATERMARK_MODEL)
    if "watermark" not in spec.capabilities:
        raise UnsupportedRequest(f"{spec.name} is not a watermark model", field="model", hint="use audioseal")
    audio, rate = await source_audio(svc, request, files, FIELD)
    if audio.shape[-1] == 0:
        raise Invalid("the audio holds no samples", field=FIELD, hint="send a file with some audio in it")
    stored = request.model_copy(update={FIELD: None, "model": spec.name})
    job = Job(kind=KIND, model=spec.name, request=stored, seed=0, priority=PRIORITY_INTERACTIVE)
    job.run_after(downloads.require(svc, spec))
    keep_input(svc, job, audio, rate)
    try:
        return svc.scheduler.submit(job)
    except BaseException:
        svc.scheduler.artifacts.remove(job.id)
        raise
