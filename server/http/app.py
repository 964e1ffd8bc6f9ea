"""The Starlette application: routes, error mapping, start-up and shut-down. HTTP only."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lib import __version__
from lib.errors import ServiceError
from lib.schemas import (
    DECODE_INFO,
    ENCODE_INFO,
    CodecCodes,
    ContinuationRequest,
    DecodeOptions,
    EncodeOptions,
    Health,
    Job,
    JobAccepted,
    JobList,
    JobsRequest,
    JobsSubmitted,
    MelodyRequest,
    ModelInfo,
    ModelList,
    MusicRequest,
    SoundRequest,
    info_header,
)
from server.http import errors
from server.http.auth import ApiKeyMiddleware
from server.http.guard import RequestGuard
from server.http.openapi import Endpoint, build_document
from server.http.routes import codec, generate, health, jobs, models
from server.jobs.job import STATES

if TYPE_CHECKING:
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
    *sorted({info_header(key) for key in (*ENCODE_INFO, *DECODE_INFO)}),
]


def _generation(path: str, handler, summary: str, body) -> Endpoint:
    """A POST /api/generate/* endpoint: a request schema in, audio (or a 202 job) out."""
    return Endpoint(
        "POST",
        path,
        handler,
        summary,
        body=body,
        answers_audio=True,
        errors=(400, 404, 409, 413, 415, 422, 429, 503, 507),
    )


ENDPOINTS = [
    Endpoint(
        "GET", "/health", health.health, "Service health, never blocked by generation", answer=Health, errors=(503,)
    ),
    Endpoint("GET", "/api/models", models.list_models, "The model catalogue", answer=ModelList),
    Endpoint("GET", "/api/models/{name}", models.get_model, "One model", answer=ModelInfo, errors=(404,)),
    Endpoint(
        "POST",
        "/api/models/{name}/download",
        models.download_model,
        "Download a model into the hub cache: 202 with the job (joins a running one); 200 if installed",
        answer=JobAccepted,
        status=202,
        errors=(404, 503, 507),
    ),
    Endpoint(
        "DELETE",
        "/api/models/{name}",
        models.delete_model,
        "Unload a model and delete its files (409 while jobs use it)",
        answer=ModelInfo,
        errors=(404, 409),
    ),
    Endpoint(
        "POST",
        "/api/models/{name}/load",
        models.load_model,
        "Load an installed model (unloading idle ones past the memory budget)",
        answer=ModelInfo,
        errors=(404, 409, 503),
    ),
    Endpoint(
        "POST",
        "/api/models/{name}/unload",
        models.unload_model,
        "Unload a model and free its memory (409 while a job uses it)",
        answer=ModelInfo,
        errors=(404, 409),
    ),
    _generation("/api/generate/music", generate.generate_music, "Text to music", MusicRequest),
    _generation(
        "/api/generate/melody",
        generate.generate_melody,
        "Music that follows a melody (MusicGen-Melody): a multipart upload, or JSON",
        MelodyRequest,
    ),
    _generation(
        "/api/generate/continuation",
        generate.generate_continuation,
        "Continue an audio prompt, optionally steered by text: a multipart upload, or JSON",
        ContinuationRequest,
    ),
    _generation("/api/generate/sound", generate.generate_sound, "Text to sound effect (AudioGen)", SoundRequest),
    Endpoint(
        "POST",
        "/api/jobs",
        jobs.submit_jobs,
        "Submit one job or a list (bulk work, queued behind interactive requests)",
        body=JobsRequest,
        answer=JobsSubmitted,
        status=202,
        errors=(400, 404, 409, 413, 415, 422, 429, 507),
    ),
    Endpoint(
        "GET",
        "/api/jobs",
        jobs.list_jobs,
        "Jobs, newest first",
        answer=JobList,
        errors=(422,),
        query=(("state", "|".join(STATES)), ("limit", "1-1000"), ("offset", "")),
    ),
    Endpoint("GET", "/api/jobs/{job_id}", jobs.get_job, "One job", answer=Job, errors=(404,)),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}/audio",
        jobs.job_audio,
        "A finished job's audio, converted on request",
        answers_audio=True,
        errors=(404, 409, 422),
        query=(
            ("format", "wav|flac|mp3|ogg"),
            ("sample_rate", "Hz or native"),
            ("bit_depth", "16|24|32"),
            ("normalize", "loudness|peak|none"),
        ),
    ),
    Endpoint(
        "GET",
        "/api/jobs/{job_id}/events",
        jobs.job_events,
        "Server-sent events: progress, position and ETA, then done, failed or cancelled",
        errors=(404,),
    ),
    Endpoint("DELETE", "/api/jobs/{job_id}", jobs.cancel_job, "Cancel a job", answer=Job, errors=(404,)),
    Endpoint(
        "POST",
        "/api/encode",
        codec.encode,
        "Audio to an EnCodec bitstream (.ecdc), or its codes as JSON",
        body=EncodeOptions,
        errors=(400, 404, 409, 413, 415, 422, 503, 507),
    ),
    Endpoint(
        "POST",
        "/api/decode",
        codec.decode,
        "An EnCodec bitstream (.ecdc) to audio",
        body=DecodeOptions,
        answers_audio=True,
        errors=(400, 409, 413, 415, 422, 503, 507),
    ),
    Endpoint("GET", "/metrics", health.metrics, "Prometheus metrics"),
]


def create_app(svc: Services) -> Starlette:
    """The app over services built by the composition root (server/main.py build_services). Pure:
    nothing starts until the app's lifespan does."""
    settings = svc.settings
    extra = (JobAccepted, CodecCodes)
    document = build_document(ENDPOINTS, "AudioCraft resource", __version__, extra=extra)
    codec.document_uploads(document)
    generate.document_uploads(document)

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        svc.start()
        log.info(
            "serving on %s:%s, device %s, models from %s",
            settings.host,
            settings.port,
            svc.registry.device,
            settings.hub_cache,
        )
        try:
            yield
        finally:
            svc.stop()

    routes = [Route(ep.path, ep.handler, methods=[ep.method]) for ep in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Exception too: Starlette's outermost middleware answers it (and logs the traceback).
        exception_handlers={cls: errors.handle for cls in (ServiceError, ValidationError, HTTPException, Exception)},
    )
    # Outermost last: the guard (Host, then Origin) -> CORS (allowed origins only) -> the API key.
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
    app.state.services = svc
    app.state.openapi = document
    return app
