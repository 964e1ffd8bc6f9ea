"""The input audio of melody, continuation and watermark-detection requests: a multipart upload, base64 in JSON, an
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
from server.audio.decode import read_audio
from server.audio.encode import encode_audio
from server.audio.errors import AudioInputError
from server.audio.input import load_input
from server.jobs.artifacts import INPUT, MASTER
from server.jobs.job import UNFINISHED_STATES, Job

if TYPE_CHECKING:
    from server.services import Services


def decode_base64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"'{field}' is not valid base64", field=field, hint="base64-encode the audio file") from None


async def job_audio(svc: Services, job_id: str, field: str) -> bytes:
    """The audio of an earlier job: a generation's or a mix's native-rate master, a decode's answer.
    NotFound (404) for an unknown job, Conflict (409) while it runs, Invalid (422) when it has none."""
    job = svc.scheduler.get(job_id)  # 404 when unknown
    if job.state in UNFINISHED_STATES:
        raise Conflict(
            code="job_not_finished",
            message=f"job {job.id} is {job.state}: it has no audio yet to use as the {field}",
            field=field,
            hint=f"wait for it to end (GET /api/jobs/{job.id}/events), then send this again",
        )
    artifacts = svc.scheduler.artifacts
    name = MASTER if artifacts.path(job.id, MASTER).is_file() else None
    result = job.result
    if name is None and result is not None and result.file and result.media_type.startswith("audio/"):
        name = result.file
    if job.state != "succeeded" or name is None:
        raise Invalid(
            f"job {job.id} ({job.kind}, {job.state}) has no audio to use as the {field}",
            code="no_audio",
            field=field,
            hint="use a generation, mix or decode job that succeeded",
        )
    return await run_in_threadpool(artifacts.read, job.id, name)


async def content_audio(svc: Services, name: str) -> tuple[bytes, str]:
    """(bytes, file name) of an audio content item; ContentNotFound (404) or InvalidContent (422)."""
    path = ContentStore.for_data_dir(svc.settings.data_dir).resolve_audio(name)
    return await run_in_threadpool(path.read_bytes), path.name


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
        return decode_base64(given["base64"], field), None
    if given["a job"] is not None:
        return await job_audio(svc, given["a job"], f"{field}_job"), None
    return await content_audio(svc, given["a content item"])


async def input_audio(
    svc: Services, spec: ModelSpec, request: BaseModel, files: dict[str, UploadFile], field: str
) -> np.ndarray:
    """The request's input audio as float32 [channels, samples] at the model's rate: mono for a
    melody, the model's channels for an audio prompt."""
    data, filename = await _source(svc, request, files, field)
    melody = field == "melody"
    mono = field in ("melody", "style")  # both conditioners take mono (AudioCraft averages the channels)
    return await run_in_threadpool(
        load_input,
        data,
        spec.sample_rate,
        1 if mono else spec.channels,
        svc.settings.max_duration_s,
        filename,
        getattr(request, "melody_start", None) if melody else None,
        getattr(request, "melody_end", None) if melody else None,
        field,
    )


async def source_audio(
    svc: Services, request: BaseModel, files: dict[str, UploadFile], field: str
) -> tuple[np.ndarray, int]:
    """The request's input audio as it is: (float32 [channels, samples], its own sample rate)."""
    data, filename = await _source(svc, request, files, field)

    def read() -> tuple[np.ndarray, int]:
        try:
            return read_audio(data, filename, max_duration_s=svc.settings.max_duration_s)
        except AudioInputError as exc:
            raise AudioInputError(exc.message, field=field) from None

    return await run_in_threadpool(read)


def keep_input(svc: Services, job: Job, audio: np.ndarray, sample_rate: int) -> None:
    data, _ = encode_audio(audio, sample_rate, "wav", 32)
    svc.scheduler.artifacts.write(job.id, INPUT, data)
