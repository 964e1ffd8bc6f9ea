"""The one job queue. Every task (generation, codec, download) is a job here: stored durably, listed,
followed and cancelled the same way. Queued jobs wait in one priority order (synchronous requests
before bulk work, then by age); the lane that owns a job's kind (server/jobs/lane.py) takes it from
the queue when it has room and runs it. A job may run after another (`Job.after`, a generation after
its model's download): it is ready once that one succeeds, and fails with its error otherwise.

Every state change goes to the durable store as it happens; on start, jobs that were queued or
running when the last process died are queued again (same id, same seed), each lane recovering its
own. Torch-free: the runners behind the lanes bring the engine, and only the composition root
(server/main.py) builds them.

A full disk is a state, not a crash: new work is refused (507) while the data dir's free space is
below the floor; a job whose start cannot be stored fails with the disk's error; an end that cannot
be stored is kept in memory (still answered by get and list) and stored once the disk has room again.
No lane thread dies of it, and nothing needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence

from lib.errors import Unavailable
from server import metrics
from server.jobs import backlog
from server.jobs.artifacts import ArtifactStore
from server.jobs.errors import JobNotFound, LowDiskSpace, QueueFull, TooManyJobs
from server.jobs.job import Job
from server.jobs.lane import Lane, failure
from server.jobs.store import JobStore

log = logging.getLogger("audiocraft.jobs")

MAX_RETRY_AFTER_S = 3600

# fits(head, job): may `job` run together with `head`, the most urgent ready job of the lane?
Fits = Callable[[Job, Job], bool]


class Scheduler:
    def __init__(
        self,
        lanes: Sequence[Lane],
        store: JobStore,
        artifacts: ArtifactStore,
        queue_depth: int,
        retention_s: float,
        min_free_bytes: int = 0,
    ):
        self.lanes = list(lanes)
        self.store = store
        self.artifacts = artifacts
        self.queue_depth = queue_depth
        self.retention_s = retention_s
        self.min_free_bytes = min_free_bytes
        self._lane_of: dict[str, Lane] = {}
        self.request_types: dict[str, type] = {}
        for lane in self.lanes:
            for kind, schema in lane.kinds.items():
                if kind in self._lane_of:
                    raise ValueError(f"job kind {kind!r} belongs to two lanes")
                self._lane_of[kind] = lane
                self.request_types[kind] = schema
            lane.bind(self)
        self._live: dict[str, Job] = {}  # queued and running jobs; finished ones live in the store
        self._unsaved: dict[str, Job] = {}  # finished jobs whose end the store could not take yet (disk full)
        self._queue: list[Job] = []
        self._cond = threading.Condition()  # reentrant: a job that ends under it wakes the lanes
        self._stopping = False
        self._stop_deadline = 0.0
        self._started = False
        self.throughput = backlog.Throughput()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self.clean_up()
        self._stopping = False
        for lane in self.lanes:
            lane.start()
        self._started = True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Admit nothing more; let running jobs finish within timeout_s. Whatever still runs then is
        left unfinished: the store says 'running', so it runs again at the next start."""
        with self._cond:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        for lane in self.lanes:
            lane.stopping()
        for lane in self.lanes:
            lane.stop()
        self.save_unsaved()  # a last try; what stays unsaved runs again at the next start

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

    def recover(self) -> int:
        # live: submitted before start; unsaved: ended, though the store does not know it yet
        rows = [r for r in self.store.unfinished() if r["id"] not in self._live and r["id"] not in self._unsaved]
        jobs = []
        for row in rows:
            if row["kind"] not in self._lane_of:
                log.warning("job %s is of kind %r, which no lane runs here; it stays queued", row["id"], row["kind"])
                continue
            job = Job.from_row(row, self.request_types)
            if job.state == "running":
                log.warning("%s job %s was interrupted; queueing it again", job.kind, job.id)
            job.state, job.progress, job.eta_s, job.started_at = "queued", 0.0, None, None
            self.store.update(job.id, state="queued", progress=0.0, eta_s=None, started_at=None)
            jobs.append(job)
        with self._cond:
            for job in jobs:  # all live before any looks for the job it runs after
                self._live[job.id] = job
            for job in jobs:
                self._lane_of[job.kind].recover(job)
                self._track(job)
            self._sort()
        return len(jobs)

    def clean_up(self) -> int:
        """Finished jobs older than the retention, and their artifacts."""
        self.save_unsaved()
        old = self.store.finished_before(time.time() - self.retention_s)
        for job_id in old:
            self.artifacts.remove(job_id)
        self.store.delete(old)
        return len(old)

    # -- submission and queries ------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        return self.submit_many([job])[0]

    def check_space(self) -> None:
        """LowDiskSpace (507) while the data dir's disk has less free space than the floor: serving
        asks before it writes a job's input, and every submission asks again."""
        if self.min_free_bytes <= 0:
            return
        free = shutil.disk_usage(self.artifacts.root).free
        if free < self.min_free_bytes:
            raise LowDiskSpace(free, self.min_free_bytes)

    def submit_many(self, jobs: list[Job]) -> list[Job]:
        """All or nothing: if the queue can't take every job, none is taken."""
        if len(jobs) > self.queue_depth:
            raise TooManyJobs(len(jobs), self.queue_depth)
        self.check_space()
        with self._cond:
            if len(self._queue) + len(jobs) > self.queue_depth:
                metrics.JOBS_REJECTED.inc()
                raise QueueFull(len(self._queue), self._retry_after_s(len(self._queue) + len(jobs) - self.queue_depth))
            self.store.insert_many([j.row() for j in jobs])  # InsufficientStorage when the disk is full
            for job in jobs:
                self._live[job.id] = job
                self._track(job)
                metrics.JOBS_SUBMITTED.labels(job.kind).inc()
            self._sort()
            self._cond.notify_all()
        self.save_unsaved()  # the store took a write: it may take the ends it refused before
        return jobs

    def submit_unless_running(self, job: Job) -> Job:
        """The unfinished job of the same kind and model if there is one (a second request for a model
        joins its download), else `job`, submitted. One decision under the queue's lock."""
        with self._cond:
            return self.find(job.kind, job.model) or self.submit(job)

    def get(self, job_id: str) -> Job:
        job = self._live.get(job_id) or self._unsaved.get(job_id)
        if job is not None:
            return job
        row = self.store.get(job_id)
        if row is None or row["kind"] not in self.request_types:
            raise JobNotFound(job_id)
        return Job.from_row(row, self.request_types)

    def find(self, kind: str, model: str) -> Job | None:
        """The oldest unfinished job of this kind for this model (a download to join)."""
        matches = [j for j in list(self._live.values()) if j.kind == kind and j.model == model and not j.finished]
        return min(matches, key=lambda j: j.created_at) if matches else None

    def position(self, job: Job) -> int | None:
        """How many queued jobs of its lane go before it; None once it runs."""
        with self._cond:
            if job not in self._queue:
                return None
            lane = self._lane_of.get(job.kind)
            ahead = self._queue[: self._queue.index(job)]
            return sum(1 for j in ahead if self._lane_of.get(j.kind) is lane)

    def list(self, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        rows, total = self.store.page(state, limit, offset)
        # Live jobs carry fresher progress than their stored row.
        known = [r for r in rows if r["kind"] in self.request_types]
        fresher = {**self._unsaved, **self._live}
        return [fresher.get(r["id"]) or Job.from_row(r, self.request_types) for r in known], total

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                metrics.QUEUE_DEPTH.set(len(self._queue))
                job.finish("cancelled")
                return job
        # Running: its lane stops it at the next step or block. Finished: nothing to do.
        job.cancel_requested.set()
        return job

    def counts(self) -> tuple[int, int]:
        """(queued, running) over every lane."""
        return len(self._queue), sum(len(lane.running()) for lane in self.lanes)

    def busy_models(self) -> set[str]:
        """Models that queued or running jobs need."""
        return {j.model for j in list(self._live.values())}

    async def wait(self, job: Job) -> Job:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        job.on_done(wake)
        await done
        return job

    # -- for the lanes -----------------------------------------------------------------------
    def take(self, lane: Lane, limit: int, block: bool, fits: Fits | None = None) -> list[Job]:
        """Up to `limit` of the most urgent ready jobs of the lane, marked running. With `fits`, the
        most urgent one must fit (else nothing is taken: it waits for the lane to drain) and the
        others taken must fit with it. `block` waits for work; [] when the queue is stopping (or,
        not blocking, when nothing is ready). A job whose start the store refuses (disk full) fails
        with that error and is not handed out."""
        with self._cond:
            while True:
                if self._stopping:
                    return []
                ready = self._ready(lane)
                if ready:
                    head = ready[0]
                    if fits is not None and not fits(head, head):
                        return []
                    chosen = [j for j in ready if fits is None or fits(head, j)][:limit]
                    now = time.time()  # jobs that start together share their start time
                    for job in chosen:
                        self._queue.remove(job)
                    metrics.QUEUE_DEPTH.set(len(self._queue))
                    started = [job for job in chosen if self._started_running(job, now)]
                    if started or not block:
                        return started
                    continue  # every one failed to start: look again
                if not block:
                    return []
                self._cond.wait(timeout=3600)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Wait up to `seconds`, less when the queue stops or wakes (a lane backing off)."""
        with self._cond:
            if not self._stopping:
                self._cond.wait(seconds)

    # -- internals -------------------------------------------------------------------------
    def _ready(self, lane: Lane) -> list[Job]:
        """The lane's queued jobs that can run now (called with the lock held). A job whose
        predecessor did not succeed fails with its error."""
        mine = [j for j in self._queue if self._lane_of.get(j.kind) is lane]
        for job in [j for j in mine if j.waits_for is not None and j.waits_for.finished]:
            before, job.waits_for = job.waits_for, None
            if before.state != "succeeded":
                self._queue.remove(job)
                mine.remove(job)
                error = before.error or Unavailable(
                    f"the {before.kind} job {before.id} this job waited for was {before.state}",
                    code=f"{before.kind}_failed",
                )
                job.finish("failed", error)
        return [j for j in mine if j.waits_for is None]

    def _track(self, job: Job) -> None:
        """Queue a live job (called with the lock held)."""
        self._queue.append(job)
        job.on_done(lambda: self._finished(job))
        if job.after is not None and job.waits_for is None:
            try:
                job.waits_for = self.get(job.after)
            except JobNotFound:
                job.waits_for = None  # cleaned up long ago: it ended; the lane finds out what is missing
        if job.waits_for is not None:
            job.waits_for.on_done(self.wake)

    def _started_running(self, job: Job, now: float) -> bool:
        """Mark the job running, in the store first: False (the job failed with the store's error)
        when the store refuses."""
        try:
            self.store.update(job.id, state="running", started_at=now, attempts=job.attempts + 1)
        except Exception as exc:  # the disk is full (507), or the store fails: the job fails, the lane goes on
            log.warning("%s job %s could not start: %s", job.kind, job.id, exc)
            job.finish("failed", failure(job, exc))
            return False
        job.state, job.started_at, job.attempts = "running", now, job.attempts + 1
        job.on_done(lambda: self.throughput.record(job))
        return True

    def _finished(self, job: Job) -> None:
        """Runs in whichever thread ended the job: persist, forget the live copy, wake the lanes
        (a job may have waited for this one). An end the store refuses is kept until it takes it."""
        with self._cond:
            self._unsaved[job.id] = job
            self._live.pop(job.id, None)
        metrics.JOBS_FINISHED.labels(job.kind, job.state).inc()
        self.save_unsaved()
        self.wake()

    def save_unsaved(self) -> None:
        """Store the ends the store refused before (oldest first), until it refuses again."""
        for job in sorted(list(self._unsaved.values()), key=lambda j: j.finished_at or 0.0):
            try:
                self.store.update(job.id, **job.outcome())
            except Exception as exc:  # a full disk, or any store failure: kept, tried again later
                log.warning("job %s ended %s but the store cannot say so yet: %s", job.id, job.state, exc)
                return
            self._unsaved.pop(job.id, None)

    def _sort(self) -> None:
        self._queue.sort(key=lambda j: (j.priority, j.created_at))
        metrics.QUEUE_DEPTH.set(len(self._queue))

    def _retry_after_s(self, need: int) -> int:
        """Whole seconds until `need` queued jobs have started (called with the lock held):
        server/jobs/backlog.py says how, from the running jobs' time left, the queued jobs' durations,
        the seconds per second of audio measured here, and each lane's width."""
        now = time.time()
        starts: list[float] = []
        for lane in self.lanes:
            queued = [j for j in self._queue if self._lane_of.get(j.kind) is lane]
            if not queued:
                continue
            running = lane.running()
            starts += backlog.start_times(
                lane.capacity,
                [self.throughput.remaining(j, now) for j in running],
                queued,
                self.throughput.work,
                lane.group,
                lane.group(running[0]) if running else None,
            )
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(backlog.wait_for_room(starts, need))))
