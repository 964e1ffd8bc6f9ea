"""/api/jobs: batch submission, status, progress events, result, cancel."""

from __future__ import annotations

import asyncio
import json

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lib.errors import BadRequest, Conflict, Invalid
from lib.schemas import JobList, JobsSubmitted, OutputOptions
from server.http.payload import read_body
from server.http.routes.generate import audio_response, default_model, failed_response, prepare_job
from server.jobs.job import PRIORITY_BATCH
from server.jobs.kinds import REQUEST_TYPES
from server.jobs.runner import rerender
from server.services import Services

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
EVENT_INTERVAL_S = 0.25


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


def _prefixed(exc: ValidationError, index: int, many: bool) -> ValidationError:
    """Name the list item in the field path: [2].prompt."""
    if not many:
        return exc
    errors = [{**e, "loc": (f"[{index}]", *e["loc"])} for e in exc.errors()]
    return ValidationError.from_exception_data(exc.title, errors)  # type: ignore[arg-type]


def _forget_inputs(svc: Services, jobs) -> None:
    """Input audio kept for jobs that were not taken after all."""
    for job in jobs:
        svc.scheduler.artifacts.remove(job.id)


async def submit_jobs(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    data = json.loads(await read_body(request, int(svc.settings.max_upload_mb * 1e6)) or b"null")
    many = isinstance(data, list)
    items = data if many else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise BadRequest(
            code="invalid_json",
            message="send one job object or a non-empty list of them",
            hint='e.g. [{"kind": "music", "prompt": "..."}]',
        )
    jobs = []
    for index, item in enumerate(items):
        kind = item.pop("kind", "music")
        if kind not in REQUEST_TYPES:
            raise Invalid(
                f"kind must be one of {', '.join(REQUEST_TYPES)}",
                field=f"[{index}].kind" if many else "kind",
            )
        try:
            req = REQUEST_TYPES[kind].model_validate(item, context=svc.limits)
        except ValidationError as exc:
            raise _prefixed(exc, index, many) from None
        try:
            jobs.append(await prepare_job(svc, kind, req, {}, req.model or default_model(svc, kind), PRIORITY_BATCH))
        except Exception:
            _forget_inputs(svc, jobs)
            raise
    try:
        svc.scheduler.submit_many(jobs)
    except Exception:
        _forget_inputs(svc, jobs)
        raise
    body = JobsSubmitted(ids=[j.id for j in jobs], jobs=[j.view(svc.scheduler.position(j)) for j in jobs])
    return JSONResponse(body.model_dump(), status_code=202)


async def list_jobs(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise Invalid(f"state must be one of {', '.join(STATES)}", field="state")
    limit = _int_param(request, "limit", 50, 1, 1000)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    jobs, total = svc.scheduler.list(state, limit, offset)
    body = JobList(jobs=[j.view(svc.scheduler.position(j)) for j in jobs], total=total)
    return JSONResponse(body.model_dump())


async def get_job(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())


async def job_audio(request: Request) -> Response:
    """The answer as generated, or converted: ?format=&sample_rate=&bit_depth=&normalize=."""
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    if not job.finished:
        raise Conflict(
            code="job_not_finished", message=f"job {job.id} is {job.state}", hint=f"GET /api/jobs/{job.id}/events"
        )
    if job.state != "succeeded":
        return failed_response(job)
    overrides = {k: v for k, v in request.query_params.items() if k in OutputOptions.model_fields}
    if not overrides:
        return audio_response(svc, job)
    stored = {k: getattr(job.request, k) for k in OutputOptions.model_fields}
    options = OutputOptions.model_validate({**stored, **overrides})
    rendered = await run_in_threadpool(rerender, svc.scheduler.artifacts, job, options)
    return audio_response(svc, job, rendered)


async def job_events(request: Request) -> StreamingResponse:
    """Server-sent events: `progress` while queued or running, then one of done / failed / cancelled."""
    svc: Services = request.app.state.services
    job_id = request.path_params["job_id"]
    svc.scheduler.get(job_id)  # 404 before the stream starts

    async def stream():
        last = None
        while True:
            job = svc.scheduler.get(job_id)
            view = job.view(svc.scheduler.position(job)).model_dump(mode="json")
            if job.finished:
                event = {"succeeded": "done"}.get(job.state, job.state)
                yield f"event: {event}\ndata: {json.dumps(view)}\n\n"
                return
            snapshot = (view["state"], view["position"], view["progress"])
            if snapshot != last:
                last = snapshot
                yield f"event: progress\ndata: {json.dumps(view)}\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_INTERVAL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def cancel_job(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = svc.scheduler.cancel(request.path_params["job_id"])
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())
