"""/api/jobs: batch submission, status, progress events, result, cancel."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from lib.errors import BadRequest, Conflict, Invalid
from lib.schemas import JOB_KINDS, JobItem, JobList, JobsQuery, JobsSubmitted, OutputOptions
from server.http.payload import from_strings, read_json
from server.http.routes.answers import failed_response
from server.http.routes.generate import audio_response
from server.jobs.job import PRIORITY_BATCH
from server.serving import generation

if TYPE_CHECKING:
    from server.services import Services

EVENT_INTERVAL_S = 0.25
# The server-sent events of GET /api/jobs/{id}/events: `progress`, then the event of the job's end.
FINAL_EVENTS = {"succeeded": "done", "failed": "failed", "cancelled": "cancelled"}


def events_schema(job_schema: dict[str, str]) -> dict:
    """One event, for the OpenAPI document: its name, and the job as JSON in its data."""
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": job_schema}
    names = {"enum": ["progress", *FINAL_EVENTS.values()]}
    return {"type": "object", "required": ["event", "data"], "properties": {"event": names, "data": data}}


# The body of POST /api/jobs (JobsRequest in the OpenAPI document): one item, or a list of them.
_ITEM: TypeAdapter = TypeAdapter(JobItem)
_ITEMS: TypeAdapter = TypeAdapter(list[JobItem])


def _named_items(exc: ValidationError, many: bool) -> ValidationError | Invalid:
    """Errors of the JobItem union name the item ([2].prompt), not the union's tag (music.prompt)."""
    errors = []
    for e in exc.errors():
        loc = list(e["loc"])
        index = loc.pop(0) if many else None
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            where = "kind" if index is None else f"[{index}].kind"
            return Invalid(f"kind must be one of {', '.join(JOB_KINDS)}", field=where)
        loc = loc[1:]  # the tag
        errors.append({**e, "loc": tuple(([f"[{index}]"] if many else []) + loc)})
    return ValidationError.from_exception_data(exc.title, errors)  # type: ignore[arg-type]


async def submit_jobs(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    data = await read_json(request, svc.settings)
    many = isinstance(data, list)
    if not (data if many else [data]) or not all(isinstance(i, dict) for i in (data if many else [data])):
        raise BadRequest(
            "send one job object or a non-empty list of them",
            code="invalid_json",
            hint='e.g. [{"kind": "music", "prompt": "..."}]',
        )
    try:
        items = (_ITEMS if many else _ITEM).validate_python(data, context=svc.context)
    except ValidationError as exc:
        raise _named_items(exc, many) from None
    items = items if many else [items]
    types = svc.scheduler.request_types
    # exclude_unset: the request keeps what its item left out (a MAGNeT model's defaults differ)
    dumped = [(i.kind, i.model_dump(by_alias=True, exclude={"kind"}, exclude_unset=True)) for i in items]
    requests = [(kind, types[kind].model_validate(item, context=svc.context)) for kind, item in dumped]
    jobs = await generation.generate_many(svc, requests, PRIORITY_BATCH)
    body = JobsSubmitted(ids=[j.id for j in jobs], jobs=[j.view(svc.scheduler.position(j)) for j in jobs])
    return JSONResponse(body.model_dump(), status_code=202)


async def list_jobs(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    query = JobsQuery.model_validate(from_strings(JobsQuery, request.query_params))
    jobs, total = svc.scheduler.list(query.state, query.limit, query.offset)
    body = JobList(jobs=[j.view(svc.scheduler.position(j)) for j in jobs], total=total)
    return JSONResponse(body.model_dump())


async def get_job(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())


async def job_audio(request: Request) -> Response:
    """The answer as made, or a generation's converted: ?format=&sample_rate=&bit_depth=&normalize=."""
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    if not job.finished:
        raise Conflict(f"job {job.id} is {job.state}", code="job_not_finished", hint=f"GET /api/jobs/{job.id}/events")
    if job.state != "succeeded":
        return failed_response(job, status=Conflict.status)  # the job failed, not this request
    if job.result is None:
        raise Conflict(
            f"job {job.id} is a {job.kind} job: it has no audio", code="no_audio", hint=f"GET /api/jobs/{job.id}"
        )
    if job.result.file is not None:  # a codec job's answer, as made
        path = svc.scheduler.artifacts.path(job.id, job.result.file)
        return FileResponse(path, media_type=job.result.media_type, filename=f"{job.id}{path.suffix}")
    overrides = from_strings(
        OutputOptions, {k: v for k, v in request.query_params.items() if k in OutputOptions.model_fields}
    )
    if not overrides:
        return audio_response(svc, job)
    return audio_response(svc, job, await generation.rerender(svc, job, overrides))


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
                event = FINAL_EVENTS[job.state]
                yield f"event: {event}\ndata: {json.dumps(view)}\n\n"
                return
            training = view.get("training") or {}
            snapshot = (view["state"], view["position"], view["progress"], training.get("step"))
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
