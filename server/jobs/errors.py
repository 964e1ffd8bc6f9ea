"""Errors of the job queue. Torch-free: the HTTP layer imports them."""

from __future__ import annotations

from lib.errors import InsufficientStorage, NotFound, PayloadTooLarge, TooManyRequests, Unavailable
from lib.files import DATA_DIR


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


class TooManyJobs(PayloadTooLarge):
    """A batch submission larger than the whole queue: it can never be taken, however long one waits."""

    code = "too_many_jobs"

    def __init__(self, count: int, depth: int):
        super().__init__(
            f"{count} jobs in one submission is more than the queue holds ({depth})",
            hint=f"send at most {depth} at a time (AUDIOCRAFT_QUEUE_DEPTH)",
        )


class LowDiskSpace(InsufficientStorage):
    """Free space on the artifacts' disk is below the floor: new work is refused until there is room."""

    code = "low_disk_space"

    def __init__(self, free_bytes: int, floor_bytes: int, where: str = DATA_DIR):
        super().__init__(
            f"only {free_bytes / 1e6:.1f} MB free on the disk of {where}, below the "
            f"{floor_bytes / 1e6:g} MB floor: new work is refused until there is room",
            hint="free some space on that disk (finished jobs' audio is in the artifacts), or lower "
            "AUDIOCRAFT_MIN_FREE_DISK_MB; work is taken again as soon as there is room",
        )
        self.free_bytes = free_bytes
        self.floor_bytes = floor_bytes
