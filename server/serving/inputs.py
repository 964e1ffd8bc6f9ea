"""The input audio of melody and continuation requests: a multipart upload, base64 in JSON, an
earlier job's audio or an audio content item. It is decoded and checked before the job exists (a bad
file is a 4xx, never a failed job), then kept with the job (artifacts INPUT)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lib.catalogue import ModelSpec
from lib.content import ContentStore
from lib.errors import Conflict, Invalid
from lib.schemas import input_sources
from server.audio.encode import encode_audio
from server.audio.input import load_input
from server.jobs.artifacts import INPUT, MASTER
from server.jobs.job import Job

if TYPE_CHECKING:
    from server.services import Services


async def _source(svc: Services, request: BaseModel, files: dict[str, UploadFile], field: str):
    """(bytes or file, filename) of the one source given for `field`. An upload is read from its
    spooled file (on disk past 1 MB), never copied whole into memory."""
    upload = files.get(field)
    audio, job, content = input_sources(field)
    given = {
        "an upload": upload,
        "base64": getattr(request, audio),
        "a job": getattr(request, job),
        "a content item": getattr(request, content),
    }
    present = [name for name, value in given.items() if value is not None]
    if not present:
        raise Invalid(
            f"'{field}' is required: the {field} audio",
            field=field,
            hint=f"upload it as the multipart file field '{field}' (curl -F {field}=@file.mp3), or send "
            f"'{field}' (base64), '{field}_job' (a job id) or '{field}_content' (a content name) in JSON",
        )
    if len(present) > 1:
        raise Invalid(f"give the {field} once, not as {' and '.join(present)}", field=field)
    if upload is not None:
        return upload.file, upload.filename
    if given["base64"] is not None:
        try:
            return base64.b64decode(given["base64"], validate=True), None
        except (binascii.Error, ValueError):
            raise Invalid(f"'{field}' is not valid base64", field=field, hint="base64-encode the audio file") from None
    if given["a job"] is not None:
        job = svc.scheduler.get(given["a job"])  # 404 when unknown
        if job.state != "succeeded":
            raise Conflict(
                code="job_not_finished",
                message=f"job {job.id} is {job.state}: it has no audio to use as the {field}",
                field=f"{field}_job",
                hint="use a job that succeeded",
            )
        return await run_in_threadpool(svc.scheduler.artifacts.read, job.id, MASTER), None
    path = ContentStore.for_data_dir(svc.settings.data_dir).resolve_audio(given["a content item"])
    return await run_in_threadpool(path.read_bytes), path.name


async def input_audio(
    svc: Services, spec: ModelSpec, request: BaseModel, files: dict[str, UploadFile], field: str
) -> np.ndarray:
    """The request's input audio as float32 [channels, samples] at the model's rate: mono for a
    melody, the model's channels for an audio prompt."""
    data, filename = await _source(svc, request, files, field)
    melody = field == "melody"
    return await run_in_threadpool(
        load_input,
        data,
        spec.sample_rate,
        1 if melody else spec.channels,
        svc.settings.max_duration_s,
        filename,
        getattr(request, "melody_start", None) if melody else None,
        getattr(request, "melody_end", None) if melody else None,
        field,
    )


def keep_input(svc: Services, job: Job, audio: np.ndarray, sample_rate: int) -> None:
    data, _ = encode_audio(audio, sample_rate, "wav", 32)
    svc.scheduler.artifacts.write(job.id, INPUT, data)
