"""Generation requests (music, sound, melody, continuation) as jobs of the decode lane."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lib.catalogue import MUSICGEN_STYLE, WATERMARK_MODEL, get_spec, mbd_for
from lib.errors import Invalid
from lib.schemas import INPUT_FIELDS, MAX_SEED, OutputOptions
from server.engine.errors import UnsupportedRequest
from server.jobs.artifacts import MASTER
from server.jobs.job import Job
from server.serving import downloads, magnet, stems
from server.serving.inputs import input_audio, keep_input

if TYPE_CHECKING:
    from server.audio.render import RenderedAudio
    from server.services import Services


STYLE_MODEL = MUSICGEN_STYLE.name  # the one style model there is


def default_model(svc: Services, kind: str) -> str:
    """The settings' model for a job kind when the request names none."""
    settings = svc.settings
    named = {"sound": settings.default_sound_model, "melody": settings.default_melody_model, "style": STYLE_MODEL}
    return named.get(kind, settings.default_music_model)


def new_job(svc: Services, kind: str, request: BaseModel, priority: int) -> Job:
    """Checks that need the server's state (model known, installed, able), then a job ready to queue.
    A model that is not installed is downloaded first (settings.auto_download): the job runs after it."""
    spec = get_spec(request.model or default_model(svc, kind))
    if kind not in spec.capabilities:
        raise UnsupportedRequest(f"{spec.name} cannot make {kind}", field="model")
    request = magnet.resolve(spec, request)
    request = with_watermark(svc, request)
    if kind == "melody":
        request = stems.resolve(svc, request)
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED)
    job = Job(kind=kind, model=spec.name, request=request, seed=seed, priority=priority)
    download = downloads.require(svc, spec)
    if getattr(request, "decoder", "encodec") == "mbd":
        # Its decoder too (installed, or downloaded first). When both are missing the job waits for the
        # model's download, the longer one, while the decoder's runs beside it.
        decoder = mbd_for(spec)
        if decoder is None:
            raise UnsupportedRequest(
                f"{spec.name} has no Multi-Band Diffusion decoder", field="decoder", hint='use "decoder": "encodec"'
            )
        decoder_download = downloads.require(svc, decoder)
        download = download or decoder_download
    # The watermark model downloads too when it is missing; when both do, the job waits for its own
    # model, and the batch fails it (409) if AudioSeal is still not there when it starts.
    marker = downloads.require(svc, get_spec(WATERMARK_MODEL)) if request.watermark else None
    job.run_after(download or marker)
    return job


def with_watermark(svc: Services, request: BaseModel) -> BaseModel:
    """The request as the server's AUDIOCRAFT_WATERMARK setting has it: marked whatever it says
    (always), as it says (request), or refused when it asks for the mark (never). The stored request
    then says whether the audio is watermarked."""
    mode = svc.settings.watermark
    if mode == "never" and request.watermark:
        raise Invalid(
            "this server does not watermark audio (AUDIOCRAFT_WATERMARK=never)",
            field="watermark",
            hint="leave watermark out, or ask the server's operator to set AUDIOCRAFT_WATERMARK=request",
        )
    if mode == "always" and not request.watermark:
        return request.model_copy(update={"watermark": True})
    return request


async def prepare(svc: Services, kind: str, request: BaseModel, files: dict[str, UploadFile], priority: int) -> Job:
    """new_job, plus the kind's input audio (melody, audio prompt): read, checked and kept with the
    job. The stored request keeps references only, not the base64 audio. Nothing is written (nor a
    download started) while the data dir's disk is below its free-space floor (507)."""
    svc.scheduler.check_space()
    field = INPUT_FIELDS.get(kind)
    if field is None:
        if files:
            raise Invalid(f"{kind} generation takes no file upload", field=next(iter(files)))
        return new_job(svc, kind, request, priority)
    extra = set(files) - {field}
    if extra:
        raise Invalid(f"unknown file field '{extra.pop()}'", hint=f"send the file as '{field}'")
    job = new_job(svc, kind, request.model_copy(update={field: None}), priority)
    spec = get_spec(job.model)
    audio = await input_audio(svc, spec, request, files, field)
    if kind == "style":
        check_excerpt(audio, spec.sample_rate, request.excerpt_length)
    keep_input(svc, job, audio, spec.sample_rate)
    return job


def check_excerpt(audio, sample_rate: int, excerpt_s: float) -> None:
    """The style audio holds the excerpt the model listens to (AudioCraft takes it from inside the audio)."""
    have_s = audio.shape[-1] / sample_rate
    if have_s < excerpt_s:
        raise Invalid(
            f"the style audio is {have_s:.2f} s long, shorter than its excerpt_length ({excerpt_s:g} s)",
            field="style",
            hint=f"send at least {excerpt_s:g} s of style audio, or a shorter excerpt_length (down to 1.5 s)",
        )


def forget(svc: Services, jobs: list[Job]) -> None:
    """Inputs kept for jobs that were not taken after all."""
    for job in jobs:
        svc.scheduler.artifacts.remove(job.id)


def submit(svc: Services, jobs: list[Job]) -> list[Job]:
    """All or none; a refusal (429) leaves nothing behind."""
    try:
        return svc.scheduler.submit_many(jobs)
    except BaseException:
        forget(svc, jobs)
        raise


async def generate(svc: Services, kind: str, request: BaseModel, files: dict[str, UploadFile], priority: int) -> Job:
    """One request, validated, as a queued job."""
    job = await prepare(svc, kind, request, files, priority)
    return submit(svc, [job])[0]


async def generate_many(svc: Services, items: list[tuple[str, BaseModel]], priority: int) -> list[Job]:
    """A batch submission: every item becomes a job, or none does."""
    jobs: list[Job] = []
    try:
        for kind, request in items:
            jobs.append(await prepare(svc, kind, request, {}, priority))
    except BaseException:
        forget(svc, jobs)
        raise
    return submit(svc, jobs)


async def rerender(svc: Services, job: Job, overrides: dict[str, Any]) -> RenderedAudio:
    """Another format, rate, depth or normalisation of a finished job's audio, from its native-rate
    master. `overrides` (the query, as the schema types it) go over the job's own output options."""
    from server.audio.decode import read_audio
    from server.audio.render import render

    stored = {k: getattr(job.request, k) for k in OutputOptions.model_fields} | {"format": job.request.file_format}
    options = OutputOptions.model_validate({**stored, **overrides})

    def work() -> RenderedAudio:
        audio, rate = read_audio(svc.scheduler.artifacts.read(job.id, MASTER))
        return render(audio, rate, options)

    return await run_in_threadpool(work)
