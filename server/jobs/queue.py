"""What lanes, serving and HTTP see of the one job queue, whatever holds it.

Two backends hold it: the embedded default (server/jobs/scheduler.py: SQLite, live jobs in this
process) and Redis (server/jobs/cluster/: job records in hashes, streams with a consumer group for
the workers, for several processes on one machine or many). Both are a JobQueue: the same calls,
the same answers. This module holds what they share: which lane owns which kind, the stop deadline
the lanes read, retention, the wait, the free-space floor of the artifacts' disk (507), the size
of one submission (413), and the Retry-After of a full queue (server/jobs/backlog.py, from the
lanes' load that each backend reads from where it keeps it). Torch-free.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from lib.errors import ServiceError, Unavailable
from lib.schemas import ErrorBody, WorkerInfo
from server.jobs import backlog
from server.jobs.artifacts import ArtifactStore
from server.jobs.errors import LowDiskSpace, TooManyJobs
from server.jobs.feed import AudioFeed, FeedWriter
from server.jobs.job import Job
from server.jobs.lane import Lane

log = logging.getLogger("audiocraft.jobs")

# fits(head, job): may `job` run together with `head`, the most urgent ready job of the lane?
Fits = Callable[[Job, Job], bool]
# lane name -> (job kind -> the request schema it carries): what a node without lanes (an API node)
# knows of the kinds, to store and list their jobs (server/jobs/kinds.py).
KindTable = Mapping[str, Mapping[str, type[BaseModel]]]

MAX_RETRY_AFTER_S = 3600


@dataclass
class LaneLoad:
    """What one lane has to do, for the Retry-After estimate (server/jobs/backlog.py)."""

    capacity: int  # jobs it runs at once (on Redis: over every worker)
    running: list[Job]
    queued: list[Job]  # in queue order
    group: Callable[[Job], Hashable | None]  # Lane.group: jobs of different groups never run together


class JobQueue(ABC):
    def __init__(
        self,
        lanes: Sequence[Lane],
        artifacts: ArtifactStore,
        queue_depth: int,
        retention_s: float,
        kinds: KindTable | None = None,
        min_free_bytes: int = 0,
    ):
        self.lanes = list(lanes)
        self.artifacts = artifacts
        self.queue_depth = queue_depth
        self.retention_s = retention_s
        self.min_free_bytes = min_free_bytes
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
        self._stopped = threading.Event()  # set while stopping: a lane's pause ends at once
        self._started = False
        # Seconds per unit of work, per kind, over the last jobs that succeeded (Retry-After).
        self.throughput = backlog.Throughput()
        self._feeds: dict[str, AudioFeed] = {}  # streaming jobs' audio, while they run (in this process)
        self._feeds_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.clean_up()
        self._stopping = False
        self._stopped.clear()
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
        self._stopped.set()

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
        self.save_unsaved()
        old = self.store.finished_before(time.time() - self.retention_s)
        for job_id in old:
            self.artifacts.remove(job_id)
        self.store.delete(old)
        return len(old)

    # -- submission and queries ------------------------------------------------------------
    store: object  # the durable records: JobStore (SQLite) or RedisJobStore

    def submit(self, job: Job) -> Job:
        return self.submit_many([job])[0]

    def check_space(self) -> None:
        """LowDiskSpace (507) while the artifacts' disk has less free space than the floor: serving
        asks before it writes a job's input, and every submission asks again."""
        if self.min_free_bytes <= 0:
            return
        free = shutil.disk_usage(self.artifacts.root).free
        if free < self.min_free_bytes:
            raise LowDiskSpace(free, self.min_free_bytes, self.artifacts.label)

    def _admit(self, jobs: list[Job]) -> None:
        """What every submission checks before the queue's own decision: a batch larger than the whole
        queue can never be taken (TooManyJobs, a 413, not a 429), and the disk's floor (507)."""
        if len(jobs) > self.queue_depth:
            raise TooManyJobs(len(jobs), self.queue_depth)
        self.check_space()

    def save_unsaved(self) -> None:
        """Store the job ends the store refused before (the embedded queue keeps them while its disk is
        full; housekeeping calls this each pass). Nothing to do by default: a Redis worker's sync
        thread retries its finishes by itself."""
        return None

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

    def workers(self) -> list[WorkerInfo] | None:
        """The workers that share the queue, with their models and slots; None for a queue that is
        this process alone (the embedded one)."""
        return None

    async def wait(self, job: Job) -> Job:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        job.on_done(wake)
        await done
        return job

    # -- streamed audio (server/jobs/feed.py) ------------------------------------------------------
    # In this process by default (the embedded queue: the lane and the reader share the job); the
    # Redis queue carries it in a Redis stream per job instead.
    def open_feed(self, job: Job, channels: int) -> FeedWriter:
        """Where a lane writes a running job's audio as it is made; it ends with the job."""
        return self._local_feed(job) or AudioFeed()  # ended already: nobody will read it

    def follow(self, job: Job, channels: int) -> AsyncIterator | None:
        """The job's audio from its start, as it is made (float32 [channels, n] blocks at the model's
        rate), until the job ends; None once it has ended (its answer is stored)."""
        feed = self._local_feed(job)
        return None if feed is None else feed.follow()

    def _local_feed(self, job: Job) -> AudioFeed | None:
        """The job's feed, made by the first of its writer and its readers; None once the job ended."""
        with self._feeds_lock:
            feed = self._feeds.get(job.id)
            if feed is not None or job.finished:
                return feed
            feed = self._feeds[job.id] = AudioFeed()
        job.on_done(lambda: self._end_feed(job))
        return feed

    def _end_feed(self, job: Job) -> None:
        with self._feeds_lock:
            feed = self._feeds.pop(job.id, None)
        if feed is not None:
            feed.close(job.state)

    # -- for the lanes -----------------------------------------------------------------------
    @abstractmethod
    def take(self, lane: Lane, limit: int, block: bool, fits: Fits | None = None) -> list[Job]:
        """Up to `limit` of the most urgent ready jobs of the lane, marked running. With `fits`, the
        most urgent one must fit (else nothing is taken: it waits for the lane to drain) and the
        others taken must fit with it. `block` waits for work; [] when the queue is stopping (or,
        not blocking, when nothing is ready)."""

    @abstractmethod
    def wake(self) -> None:
        """Lanes waiting for work look again."""

    def pause(self, seconds: float) -> None:
        """Wait up to `seconds`, less when the queue stops (a lane backing off after a failed take)."""
        self._stopped.wait(seconds)

    # -- shared rules --------------------------------------------------------------------------
    def _room_in_s(self, need: int, loads: Iterable[LaneLoad], throughput: backlog.Throughput | None = None) -> int:
        """Whole seconds until `need` queued jobs have started: server/jobs/backlog.py says how, from
        the running jobs' time left, the queued jobs' durations, the seconds per second of audio
        measured (`throughput`, default self.throughput) and each lane's width."""
        throughput = throughput or self.throughput
        now = time.time()
        starts: list[float] = []
        for load in loads:
            if not load.queued:
                continue
            starts += backlog.start_times(
                load.capacity,
                [throughput.remaining(j, now) for j in load.running],
                load.queued,
                throughput.work,
                load.group,
                load.group(load.running[0]) if load.running else None,
            )
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(backlog.wait_for_room(starts, need))))


def predecessor_error(kind: str, job_id: str, state: str, error: ErrorBody | None) -> ErrorBody | ServiceError:
    """What a job fails with when the job it runs after did not succeed: that job's error, else why."""
    return error or Unavailable(f"the {kind} job {job_id} this job waited for was {state}", code=f"{kind}_failed")
