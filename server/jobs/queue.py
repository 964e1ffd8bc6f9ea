"""What lanes, serving and HTTP see of the one job queue, whatever holds it.

Two backends hold it: the embedded default (server/jobs/scheduler.py: SQLite, live jobs in this
process) and Redis (server/jobs/cluster/: job records in hashes, streams with a consumer group for
the workers, for several processes on one machine or many). Both are a JobQueue: the same calls,
the same answers. This module holds what they share: which lane owns which kind, the stop deadline
the lanes read, retention, the wait, and the Retry-After estimate of a full queue. Torch-free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from lib.errors import ServiceError, Unavailable
from lib.schemas import ErrorBody
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.lane import Lane

log = logging.getLogger("audiocraft.jobs")

# fits(head, job): may `job` run together with `head`, the most urgent ready job of the lane?
Fits = Callable[[Job, Job], bool]
# lane name -> (job kind -> the request schema it carries): what a node without lanes (an API node)
# knows of the kinds, to store and list their jobs (server/jobs/kinds.py).
KindTable = Mapping[str, Mapping[str, type[BaseModel]]]


class JobQueue(ABC):
    def __init__(
        self,
        lanes: Sequence[Lane],
        artifacts: ArtifactStore,
        queue_depth: int,
        retention_s: float,
        kinds: KindTable | None = None,
    ):
        self.lanes = list(lanes)
        self.artifacts = artifacts
        self.queue_depth = queue_depth
        self.retention_s = retention_s
        self._lane_of: dict[str, Lane] = {}
        self.lane_names: dict[str, str] = {}  # job kind -> the name of the lane that runs it
        self.request_types: dict[str, type] = {}
        for lane in self.lanes:
            for kind, schema in lane.kinds.items():
                if kind in self._lane_of:
                    raise ValueError(f"job kind {kind!r} belongs to two lanes")
                self._lane_of[kind] = lane
                self.lane_names[kind] = lane.name
                self.request_types[kind] = schema
            lane.bind(self)
        for lane_name, table in (kinds or {}).items():  # kinds that other processes' lanes run
            for kind, schema in table.items():
                self.lane_names.setdefault(kind, lane_name)
                self.request_types.setdefault(kind, schema)
        self._stopping = False
        self._stop_deadline = 0.0
        self._started = False
        self._job_seconds: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.clean_up()
        self._stopping = False
        self._before_lanes_start()
        for lane in self.lanes:
            lane.start()
        self._started = True

    def _before_lanes_start(self) -> None:
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Admit nothing more; let running jobs finish within timeout_s. What still runs then is left
        unfinished, to run again (at the next start, or on another worker)."""
        self._begin_stop(time.monotonic() + timeout_s)
        for lane in self.lanes:
            lane.stopping()
        for lane in self.lanes:
            lane.stop()
        self._after_lanes_stop()

    def _begin_stop(self, deadline: float) -> None:
        self._stopping = True
        self._stop_deadline = deadline

    def _after_lanes_stop(self) -> None:
        return None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def time_left_s(self) -> float:
        """Until the stop deadline (only meaningful while stopping)."""
        return self._stop_deadline - time.monotonic()

    def past_deadline(self) -> bool:
        return self._stopping and time.monotonic() > self._stop_deadline

    @property
    def alive(self) -> bool:
        return self._started and all(lane.alive for lane in self.lanes)

    @abstractmethod
    def recover(self) -> int:
        """Jobs a stopped or dead process left unfinished run again (same id, same seed)."""

    def clean_up(self) -> int:
        """Finished jobs older than the retention, and their artifacts."""
        old = self.store.finished_before(time.time() - self.retention_s)
        for job_id in old:
            self.artifacts.remove(job_id)
        self.store.delete(old)
        return len(old)

    # -- submission and queries ------------------------------------------------------------
    store: object  # the durable records: JobStore (SQLite) or RedisJobStore

    def lane_for(self, kind: str) -> Lane:
        return self._lane_of[kind]

    def submit(self, job: Job) -> Job:
        return self.submit_many([job])[0]

    @abstractmethod
    def submit_many(self, jobs: list[Job]) -> list[Job]:
        """All or nothing: if the queue can't take every job, none is taken (QueueFull, a 429)."""

    @abstractmethod
    def submit_unless_running(self, job: Job) -> Job:
        """The unfinished job of the same kind and model if there is one (a second request for a model
        joins its download), else `job`, submitted. One decision, whoever else submits at once."""

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def find(self, kind: str, model: str) -> Job | None:
        """The oldest unfinished job of this kind for this model (a download to join)."""

    @abstractmethod
    def position(self, job: Job) -> int | None:
        """How many queued jobs of its lane go before it; None once it runs."""

    @abstractmethod
    def list(self, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]: ...

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """A queued job ends at once; a running one at its lane's next step (job.cancel_requested)."""

    @abstractmethod
    def counts(self) -> tuple[int, int]:
        """(queued, running) over every lane."""

    @abstractmethod
    def busy_models(self) -> set[str]:
        """Models that queued or running jobs need."""

    async def wait(self, job: Job) -> Job:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        job.on_done(wake)
        await done
        return job

    # -- for the lanes -----------------------------------------------------------------------
    @abstractmethod
    def take(self, lane: Lane, limit: int, block: bool, fits: Fits | None = None) -> list[Job]:
        """Up to `limit` of the most urgent ready jobs of the lane, marked running. With `fits`, the
        most urgent one must fit (else nothing is taken: it waits for the lane to drain) and the
        others taken must fit with it. `block` waits for work; [] when the queue is stopping."""

    @abstractmethod
    def wake(self) -> None:
        """Lanes waiting for work look again."""

    # -- shared rules --------------------------------------------------------------------------
    def _retry_after_s(self, queued: int, recent_job_s: Sequence[float], parallel: int | None = None) -> int:
        """How long until a full queue likely has room: the recent jobs' mean time, for every queued
        job, over the widest lane (the decode batch)."""
        recent = list(recent_job_s)[-20:]
        per_job = sum(recent) / len(recent) if recent else 10.0
        if parallel is None:
            parallel = max([1] + [lane.capacity for lane in self.lanes])
        return max(1, round(per_job * max(1, queued) / max(1, parallel)))


def predecessor_error(kind: str, job_id: str, state: str, error: ErrorBody | None) -> ErrorBody | ServiceError:
    """What a job fails with when the job it runs after did not succeed: that job's error, else why."""
    return error or Unavailable(f"the {kind} job {job_id} this job waited for was {state}", code=f"{kind}_failed")
