"""The Starlette application: routes, error mapping, start-up and shut-down. HTTP only."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib import __version__
from lib.errors import ServiceError
from lib.finetune import DatasetForm, DatasetInfo, DatasetList, FinetuneRequest
from lib.schemas import (
    AUDIO_INPUT,
    DECODE_INFO,
    ECDC_MEDIA_TYPE,
    ENCODE_INFO,
    INPUT_FIELDS,
    CodecCodes,
    ContinuationRequest,
    DecodeOptions,
    EncodeOptions,
    Health,
    Job,
    JobAccepted,
    JobList,
    JobsQuery,
    JobsRequest,
    JobsSubmitted,
    MelodyRequest,
    MixRequest,
    ModelInfo,
    ModelList,
    MusicRequest,
    OutputOptions,
    SoundRequest,
    StreamOptions,
    StyleRequest,
    WatermarkDetection,
    WatermarkDetectRequest,
    info_header,
)
from server.audio.encode import MEDIA_TYPES
from server.audio.outstream import MEDIA_TYPES as STREAM_MEDIA_TYPES
from server.http import errors
from server.http.auth import PROTECTED_PREFIX, ApiKeyMiddleware
from server.http.guard import RequestGuard
from server.http.openapi import MULTIPART, Answer, Endpoint, Upload, build_document, ref
from server.http.payload import FORM_TYPES
from server.http.routes import codec, finetune, generate, health, jobs, mix, models, stream, studio, watermark
from server.http.routes.generate import AUDIO_HEADERS
from server.http.routes.stream import STREAM_HEADERS

if TYPE_CHECKING:
    from lib.settings import Settings
    from server.services import Services

log = logging.getLogger("audiocraft.http")

# What a page on an allowed origin may read of an answer beyond the CORS-safelisted headers.
EXPOSED_HEADERS = [
    "Location",
    "Retry-After",
    "Content-Disposition",
    "X-Job-Id",
    "X-Seed",
    "X-Model",
    "X-Duration-S",
    "X-Sample-Rate",
    "X-Generation-Time-S",
    "X-Channels",
    "X-Sample-Format",
    "X-Watermark",
    *sorted({info_header(key) for key in (*ENCODE_INFO, *DECODE_INFO)}),
]


AUDIO_TYPES = tuple(MEDIA_TYPES.values())
EVENTS = "text/event-stream"
AUDIO = Answer(files=AUDIO_TYPES, headers=AUDIO_HEADERS)
STREAM_TYPES = tuple(dict.fromkeys(STREAM_MEDIA_TYPES.values()))
STREAM = Answer(files=STREAM_TYPES, headers=STREAM_HEADERS, description="The audio, chunked, as it is made")
# A generation answers with its audio, or (with stream) the audio as it is made.
GENERATED = Answer(
    files=tuple(dict.fromkeys((*AUDIO_TYPES, *STREAM_TYPES))),
    headers={**AUDIO_HEADERS, **STREAM_HEADERS},
    description="The audio; with stream, chunked as it is made (X-Generation-Time-S is then absent)",
)
ACCEPTED = Answer(202, JobAccepted, description="Accepted: the job (async, or a download)")
# The errors of a request that runs as a job: its checks, the queue, and the job's own end (a
# synchronous request answers with the error its job failed with).
JOB_ERRORS = (400, 404, 409, 422, 429, 503, 507)  # 507: the data dir is (nearly) full


def _generation(path: str, handler, summary: str, body, uploads: tuple[Upload, ...] = ()) -> Endpoint:
    """A POST /api/generate/* endpoint: a request schema in (JSON or a form), audio (or a 202 job) out."""
    return Endpoint(
        "POST",
        path,
        handler,
        summary,
        answers=(GENERATED, ACCEPTED),
        errors=JOB_ERRORS,
        body=body,
        forms=(MULTIPART,) if uploads else FORM_TYPES,
        uploads=uploads,
    )


def _input(kind: str) -> tuple[Upload, ...]:
    field = INPUT_FIELDS[kind]
    return (Upload(field, f"The {field} audio: {AUDIO_INPUT} (or give {field}_job or {field}_content instead)"),)


def _codec(path: str, handler, summary: str, options, what: str, raw: str, answer: Answer) -> Endpoint:
    """POST /api/encode, /api/decode: a file in (multipart with the options as fields, or the raw body with
    the options as query parameters), a codec job's answer out."""
    return Endpoint(
        "POST",
        path,
        handler,
        summary,
        answers=(answer,),
        errors=(400, 404, 409, 422, 429, 503, 507),
        body=options,
        json_body=False,
        forms=(MULTIPART,),
        uploads=(Upload(codec.UPLOAD_FIELD, what, required=True),),
        raw=raw,
        query=options,
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/health",
        health.health,
        "Service health, never blocked by generation",
        answers=(Answer(model=Health), Answer(503, Health, description="Degraded: the job worker has stopped")),
    ),
    Endpoint("GET", "/api/models", models.list_models, "The model catalogue", answers=(Answer(model=ModelList),)),
    Endpoint(
        "GET", "/api/models/{name}", models.get_model, "One model", answers=(Answer(model=ModelInfo),), errors=(404,)
    ),
    Endpoint(
        "POST",
        "/api/models/{name}/download",
        models.download_model,
        "Download a model into the hub cache: 202 with the job (joins a running one); 200 if installed",
        answers=(ACCEPTED, Answer(model=ModelInfo, description="Installed already: the model")),
        errors=(404, 429, 503, 507),
    ),
    Endpoint(
        "DELETE",
        "/api/models/{name}",
        models.delete_model,
        "Unload a model and delete its files (409 while jobs use it); the catalogue entry stays",
        answers=(Answer(model=ModelInfo),),
        errors=(404, 409),
    ),
    Endpoint(
        "POST",
        "/api/models/{name}/load",
        models.load_model,
        "Load an installed model (unloading idle ones past the memory budget)",
        answers=(Answer(model=ModelInfo),),
        errors=(404, 409, 503),
    ),
    Endpoint(
        "POST",
        "/api/models/{name}/unload",
        models.unload_model,
        "Unload a model and free its memory (409 while a job uses it)",
        answers=(Answer(model=ModelInfo),),
        errors=(404, 409),
    ),
    _generation("/api/generate/music", generate.generate_music, "Text to music", MusicRequest),
    _generation(
        "/api/generate/melody",
        generate.generate_melody,
        "Music that follows a melody (MusicGen-Melody): a multipart upload, or JSON",
        MelodyRequest,
        _input("melody"),
    ),
    _generation(
        "/api/generate/style",
        generate.generate_style,
        "Music in the style of a 1.5-4.5 s audio excerpt, optionally steered by text (MusicGen-Style): "
        "a multipart upload, or JSON",
        StyleRequest,
        _input("style"),
    ),
    _generation(
        "/api/generate/continuation",
        generate.generate_continuation,
        "Continue an audio prompt, optionally steered by text: a multipart upload, or JSON",
        ContinuationRequest,
        _input("continuation"),
    ),
    _generation("/api/generate/sound", generate.generate_sound, "Text to sound effect (AudioGen)", SoundRequest),
    Endpoint(
        "POST",
        "/api/mix",
        mix.mix,
        "Mix tracks (earlier jobs, content items, uploads, base64) with offsets, gain, fades, trims, loops, pan "
        "and ducking, normalised and encoded as a generation: JSON, or multipart with a file part per upload",
        answers=(AUDIO, ACCEPTED),
        errors=JOB_ERRORS,
        body=MixRequest,
        forms=(MULTIPART,),
        any_uploads=mix.UPLOADS,
    ),
    Endpoint(
        "POST",
        "/api/watermark/detect",
        watermark.detect,
        "Is this audio watermarked? AudioSeal's detection score and, when it finds the mark, its 16-bit message: "
        "a multipart upload (field audio), or JSON (audio as base64, audio_job or audio_content)",
        answers=(Answer(model=WatermarkDetection, headers={"X-Job-Id": "The detection job"}), ACCEPTED),
        errors=JOB_ERRORS,
        body=WatermarkDetectRequest,
        forms=(MULTIPART,),
        uploads=(Upload("audio", watermark.UPLOAD),),
    ),
    Endpoint(
        "POST",
        "/api/jobs",
        jobs.submit_jobs,
        "Submit one job or a list (bulk work, queued behind interactive requests)",
        answers=(Answer(202, JobsSubmitted, description="Accepted: the jobs"),),
        errors=(400, 404, 409, 422, 429, 507),
        body=JobsRequest,
    ),
    Endpoint(
        "GET",
        "/api/jobs",
        jobs.list_jobs,
        "Jobs, newest first",
        answers=(Answer(model=JobList),),
        errors=(422,),
        query=JobsQuery,
    ),
    Endpoint("GET", "/api/jobs/{job_id}", jobs.get_job, "One job", answers=(Answer(model=Job),), errors=(404,)),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}/audio",
        jobs.job_audio,
        "A finished job's answer: a generation's audio (the parameters convert it; absent ones keep the job's "
        "own), a codec job's file; 409 while the job runs, when it failed (its error) or has no audio",
        answers=(Answer(model=CodecCodes, files=(*AUDIO_TYPES, ECDC_MEDIA_TYPE), headers=AUDIO_HEADERS),),
        errors=(404, 409, 422, 503),
        query=OutputOptions,
        query_defaults=False,
    ),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}/stream",
        stream.job_stream,
        "A generation job's audio as a chunked stream: from its start while it runs (what was made so far at "
        "once, then as it is made), the whole audio once it has finished; 409 when it failed or has no audio",
        answers=(STREAM,),
        errors=(404, 409, 422, 503),
        query=StreamOptions,
        query_defaults=False,
    ),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}/events",
        jobs.job_events,
        "Server-sent events: progress, position and ETA, then done, failed or cancelled",
        answers=(Answer(files=(EVENTS,), schemas={EVENTS: jobs.events_schema(ref("Job"))}),),
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/api/jobs/{job_id}",
        jobs.cancel_job,
        "Cancel a job (the job stays, cancelled)",
        answers=(Answer(model=Job),),
        errors=(404,),
    ),
    _codec(
        "/api/encode",
        codec.encode,
        "Audio to an EnCodec bitstream (.ecdc), or its codes as JSON",
        EncodeOptions,
        "audio (wav, flac, ogg, mp3, m4a; any rate and channels)",
        "audio/*",
        Answer(model=CodecCodes, files=(ECDC_MEDIA_TYPE,), headers=codec.answer_headers(ENCODE_INFO)),
    ),
    _codec(
        "/api/decode",
        codec.decode,
        "An EnCodec bitstream (.ecdc) to audio",
        DecodeOptions,
        "an .ecdc file",
        ECDC_MEDIA_TYPE,
        Answer(files=AUDIO_TYPES, headers=codec.answer_headers(DECODE_INFO)),
    ),
    Endpoint(
        "POST",
        "/api/datasets",
        finetune.create_dataset,
        "A dataset for fine-tuning: audio files with captions (sidecar .txt/.json, metadata.jsonl, or one "
        "default caption), or a ZIP; each file checked, cut into windows and encoded to EnCodec codes",
        answers=(Answer(201, DatasetInfo, description="The dataset, with each file's report"), ACCEPTED),
        errors=(400, 404, 409, 413, 422, 429, 503, 507),
        body=DatasetForm,
        json_body=False,
        forms=(MULTIPART,),
        uploads=(Upload(finetune.FILES_FIELD, "Audio files, their captions, a metadata.jsonl or ZIPs", True),),
    ),
    Endpoint("GET", "/api/datasets", finetune.list_datasets, "Datasets", answers=(Answer(model=DatasetList),)),
    Endpoint(
        "GET", "/api/datasets/{name}", finetune.get_dataset, "One dataset", answers=(Answer(model=DatasetInfo),),
        errors=(404,),
    ),
    Endpoint(
        "DELETE", "/api/datasets/{name}", finetune.delete_dataset, "Delete a dataset (409 while a fine-tune uses it)",
        answers=(Answer(model=DatasetInfo),), errors=(404, 409),
    ),
    Endpoint(
        "POST",
        "/api/finetune",
        finetune.start_finetune,
        "Fine-tune a model on a dataset (LoRA): a job whose result is a catalogue model <base>+<label>",
        answers=(ACCEPTED, Answer(model=Job)),
        errors=(400, 404, 409, 422, 429, 503, 507),
        body=FinetuneRequest,
    ),
    Endpoint("GET", "/api/finetune", finetune.list_finetunes, "Fine-tune jobs", answers=(Answer(model=JobList),)),
    Endpoint(
        "GET", "/api/finetune/{job_id}", finetune.get_finetune, "One fine-tune job", answers=(Answer(model=Job),),
        errors=(404,),
    ),
    Endpoint(
        "DELETE", "/api/finetune/{job_id}", finetune.cancel_finetune, "Cancel a fine-tune job",
        answers=(Answer(model=Job),), errors=(404,),
    ),
    Endpoint("GET", "/metrics", health.metrics, "Prometheus metrics", answers=(Answer(files=("text/plain",)),)),
]


def _routes(endpoints: list[Endpoint]) -> list[Route]:
    """One route per path, so a method the path lacks answers 405 with every method it has in Allow."""
    by_path: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    routes = []
    for path, handlers in by_path.items():

        async def dispatch(request: Request, handlers: dict[str, Any] = handlers) -> Response:
            return await handlers["GET" if request.method == "HEAD" else request.method](request)

        routes.append(Route(path, dispatch, methods=list(handlers)))
    return routes


def create_app(svc: Services) -> Starlette:
    """The app over services built by the composition root (server/main.py build_services). Pure:
    nothing starts until the app's lifespan does."""
    settings = svc.settings
    protected = PROTECTED_PREFIX if settings.api_key else None
    document = build_document(ENDPOINTS, "AudioCraft resource", __version__, svc.context, protected)

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(document)

    routes = _routes(ENDPOINTS)
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes.extend(studio.routes())  # the page at /, with its files under /studio/
    app = Starlette(
        routes=routes,
        lifespan=_lifespan(svc),
        exception_handlers=_handlers(),
    )
    _guard(app, settings)
    app.state.services = svc
    app.state.openapi = document
    return app


def create_worker_app(svc: Services) -> Starlette:
    """A worker's app (`serve --role worker`): its lanes run with the services; HTTP shows only its
    /health and /metrics (the API is on the API nodes)."""
    app = Starlette(
        routes=_routes([ep for ep in ENDPOINTS if ep.path in ("/health", "/metrics")]),
        lifespan=_lifespan(svc),
        exception_handlers=_handlers(),
    )
    _guard(app, svc.settings)
    app.state.services = svc
    return app


def _handlers() -> dict[Any, Any]:
    """Every error's answer is errors.handle's. Exception too: Starlette's outermost middleware
    answers it (and logs the traceback)."""
    return {cls: errors.handle for cls in (ServiceError, ValidationError, HTTPException, Exception)}


def _guard(app: Starlette, settings: Settings) -> None:
    """The middleware every node's app has. Outermost last: the guard (Host, then Origin) -> CORS
    (allowed origins only) -> the API key."""
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    if settings.allowed_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(
        RequestGuard,
        bound_host=settings.host,
        allowed_hosts=settings.allowed_host_names,
        allowed_origins=settings.allowed_origin_list,
    )


def _lifespan(svc: Services):
    settings = svc.settings

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        svc.start()
        log.info(
            "serving (role %s) on %s:%s, device %s, models from %s, queue %s",
            settings.role,
            settings.host,
            settings.port,
            svc.registry.device,
            settings.hub_cache,
            "Redis" if settings.queue_url else "SQLite",
        )
        try:
            yield
        finally:
            svc.stop()

    return lifespan
