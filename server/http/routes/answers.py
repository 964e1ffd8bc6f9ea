"""Answers more than one route gives."""

from __future__ import annotations

from starlette.responses import JSONResponse

from lib.errors import Conflict
from server.http.errors import to_response
from server.jobs.job import Job


def failed_response(job: Job, status: int | None = None) -> JSONResponse:
    """The error the job ended with, with its own status (a synchronous request's answer), or `status`."""
    if job.state == "cancelled":
        error = Conflict(f"job {job.id} was cancelled before it finished", code="cancelled")
    else:
        assert job.error is not None
        error = (job.error if status is None else job.error.model_copy(update={"status": status})).as_error()
    response = to_response(error)
    response.headers["X-Job-Id"] = job.id
    return response
