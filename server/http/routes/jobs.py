"""/api/jobs: status, result, cancel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.schemas import JobList
from server.http.errors import ApiError
from server.http.routes.generate import audio_response, failed_response
from server.services import Services

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name} must be an integer from {low} to {high}", field=name)
    return int(raw)


async def list_jobs(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise ApiError(422, "invalid_field", f"state must be one of {', '.join(STATES)}", field="state")
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
    svc: Services = request.app.state.services
    job = svc.scheduler.get(request.path_params["job_id"])
    if not job.finished:
        raise ApiError(409, "job_not_finished", f"job {job.id} is {job.state}", hint=f"GET /api/jobs/{job.id}")
    return audio_response(job) if job.state == "succeeded" else failed_response(job)


async def cancel_job(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    job = svc.scheduler.cancel(request.path_params["job_id"])
    return JSONResponse(job.view(svc.scheduler.position(job)).model_dump())
