"""Errors of the job queue. Torch-free: the HTTP layer imports them."""

from __future__ import annotations

from lib.errors import NotFound, TooManyRequests


class QueueFull(TooManyRequests):
    code = "queue_full"

    def __init__(self, depth: int, retry_after_s: int):
        super().__init__(
            f"the queue is full ({depth} jobs waiting)",
            hint=f"retry in about {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.depth = depth
        self.retry_after_s = retry_after_s


class JobNotFound(NotFound, LookupError):
    code = "job_not_found"

    def __init__(self, job_id: str):
        super().__init__(f"there is no job '{job_id}'", hint="GET /api/jobs lists them")
        self.job_id = job_id
