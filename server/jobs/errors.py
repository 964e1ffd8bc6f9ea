"""Errors of the job queue. Torch-free: the HTTP layer imports them."""

from __future__ import annotations

from lib.errors import NotFound, TooManyRequests, Unavailable


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


class QueueUnavailable(Unavailable):
    """The Redis the queue lives on cannot be reached (server/jobs/cluster/): every call that needs it
    answers this at once, and the next call tries again."""

    code = "queue_unavailable"

    def __init__(self, where: str):
        super().__init__(
            f"the job queue (Redis at {where}) cannot be reached",
            hint="retry shortly; this node reconnects by itself once Redis answers (AUDIOCRAFT_QUEUE_URL)",
            headers={"Retry-After": "5"},
        )
