"""RedisScheduler: the one job queue on Redis, for API nodes and workers in several processes.

The same JobQueue as the embedded one (server/jobs/scheduler.py), so lanes, serving, HTTP and the
CLI see no difference. What changes is where things live:

- **Records** are hashes (store.py); every change that is one decision is a Lua script (scripts.py):
  a batch submission is taken whole or not at all, with the queue's depth checked in the same step.
- **Order.** A lane's queued jobs wait in its ready set, by priority then age. A lane thread looks at
  it, chooses as the embedded queue does (the most urgent ready job, and those that fit with it:
  the decode lane takes as many as its batch has free slots), and claims them in one script; a job
  another worker claimed first is simply not among those it gets.
- **Holding a job.** A claim adds an entry to the lane's stream, pending for this worker in the
  consumer group `workers`. The worker's sync thread heartbeats its entries (XCLAIM to itself, which
  resets their idle time), writes its jobs' progress at a bounded rate (`TICK_S`) and reads their
  cancel flags. An entry idle past `visibility_s` belongs to a worker that died: any worker's reaper
  takes it with XAUTOCLAIM and puts the job back in its place in the ready set; it runs again with
  its recorded seed.
- **Finishing once.** A finish is written only while the record names this worker and this attempt
  (scripts.FINISH): a worker that was presumed dead and comes back is refused, and its job, which
  runs elsewhere, is not stopped or duplicated by it. A finish that cannot reach Redis is retried.
- **Live objects.** In one process there is one Job object per unfinished job it knows of: the
  object a request submitted is the one its lane runs when this process's lane takes it, so
  `on_done` and waits work as in the embedded queue; jobs that run elsewhere are followed by the sync
  thread, which ends the local object when the record says the job ended.
- **Redis away.** The calls HTTP makes raise QueueUnavailable (503) at once; lanes wait and retry;
  all of it comes back by itself when Redis does.

Torch-free: an API node runs it with no lane at all.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis

from lib.errors import ServiceError
from lib.schemas import ErrorBody, LaneSlots, WorkerInfo, parse_detail
from server import metrics
from server.jobs.artifacts import ArtifactStore
from server.jobs.cluster import feed, scripts, workers
from server.jobs.cluster.store import (
    GROUP,
    RedisJobStore,
    RedisThroughput,
    decode_row,
    encode,
    encode_fields,
    member,
)
from server.jobs.errors import JobNotFound, QueueFull, QueueUnavailable
from server.jobs.job import FINAL_STATES, Job
from server.jobs.kinds import GROUPS
from server.jobs.lane import Lane
from server.jobs.queue import Fits, JobQueue, KindTable, LaneLoad, predecessor_error

log = logging.getLogger("audiocraft.jobs")

TICK_S = 0.25  # heartbeats, progress writes and the refresh of jobs that run elsewhere
NOTIFY_BLOCK_MS = 1000  # a lane waiting for work looks again at least this often
RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # backoff of a lane while Redis is away

P = ParamSpec("P")
R = TypeVar("R")


def _answering(method: Callable[P, R]) -> Callable[P, R]:
    """A call HTTP makes: Redis out of reach is a 503 that says so, at once."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            queue: RedisScheduler = args[0]  # type: ignore[assignment]
            raise QueueUnavailable(queue.store.where) from exc

    return call


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Held:
    """A job this worker runs: the attempt it was given, and its stream entry."""

    job: Job
    lane: str
    attempt: int
    entry: str
    finishing: bool = False  # ended here; the finish is still on its way to Redis
    lost: bool = False  # the record gave the job to another attempt since
    writing: bool = False  # a thread is writing its finish (the job's own, or the sync thread's retry)


class RedisScheduler(JobQueue):
    def __init__(
        self,
        lanes: Sequence[Lane],
        store: RedisJobStore,
        artifacts: ArtifactStore,
        queue_depth: int,
        retention_s: float,
        *,
        kinds: KindTable | None = None,
        min_free_bytes: int = 0,
        visibility_s: float = 30.0,
        consumer: str | None = None,
        widths: Mapping[str, int] | None = None,
        models: workers.LocalModels | None = None,
    ):
        super().__init__(lanes, artifacts, queue_depth, retention_s, kinds, min_free_bytes)
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.throughput = RedisThroughput(self.redis, self.keys)  # what every worker measured
        self.visibility_s = visibility_s
        self.consumer = consumer or default_consumer()
        # lane name -> jobs one worker runs at once, for a lane this process does not run (Retry-After)
        self._widths = dict(widths or {})
        self.models = models  # a worker's own models: its heartbeat says what they are, placement asks
        self._installed = workers.InstalledCache(models.installed) if models else None
        self._peers: tuple[float, list[WorkerInfo]] = (0.0, [])  # (read at, the live workers' reports)
        self._scripts = {
            name: self.redis.register_script(getattr(scripts, name))
            for name in ("SUBMIT", "CLAIM", "FINISH", "END_QUEUED", "TICK", "RECLAIM")
        }
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}  # the one object per unfinished job this process knows of
        self._held: dict[str, Held] = {}  # the jobs this process's lanes run
        self._submitting: set[str] = set()  # known here, their records not written yet
        self._halt = threading.Event()
        self._syncer: threading.Thread | None = None
        self._reap_at = 0.0
        self._quiet_until = 0.0  # when the next "Redis is unreachable" line may be logged
        self._bytes: redis.Redis | None = None  # the streamed audio's client (server/jobs/cluster/feed.py)

    # -- lifecycle -------------------------------------------------------------------------
    def recover(self) -> int:
        """A worker takes back at once what it held under its own name before it restarted (a stable
        AUDIOCRAFT_WORKER_ID); jobs of workers that went silent come back through the reaper."""
        if not self.lanes:
            return 0
        count = 0
        try:
            for lane in self.lanes:
                try:
                    pending = self.redis.xpending_range(
                        self.keys.run(lane.name), GROUP, "-", "+", 10_000, consumername=self.consumer
                    )
                except redis.ResponseError:  # no stream or no group yet: nothing was ever held
                    continue
                count += self._reclaim(lane.name, "these", [p["message_id"] for p in pending], announce=True)
            count += self.reap()
        except redis.RedisError as exc:
            self._unreachable(exc)
        return count

    def clean_up(self) -> int:
        try:
            return super().clean_up()
        except redis.RedisError as exc:  # housekeeping: the next round does it
            self._unreachable(exc)
            return 0

    def _before_lanes_start(self) -> None:
        self._halt.clear()
        self._syncer = threading.Thread(target=self._sync, name="audiocraft-queue-sync", daemon=True)
        self._syncer.start()

    def _begin_stop(self, deadline: float) -> None:
        super()._begin_stop(deadline)
        self.wake()

    def _after_lanes_stop(self) -> None:
        """What this worker still holds goes back to the queue at once, for another worker (or this
        one's next start)."""
        with self._lock:
            held = [h for h in self._held.values() if not h.finishing]
        by_lane: dict[str, list[str]] = {}
        for h in held:
            log.warning("%s job %s goes back to the queue: this worker stops", h.job.kind, h.job.id)
            by_lane.setdefault(h.lane, []).append(h.entry)
        try:
            self._flush_finishes()
            for lane, entries in by_lane.items():
                self._reclaim(lane, "these", entries)
            with self._lock:
                for h in held:
                    self._held.pop(h.job.id, None)
        except redis.RedisError as exc:  # their entries stay pending: the reaper hands them on
            self._unreachable(exc)
        self._halt.set()
        if self._syncer is not None:
            self._syncer.join(30)

    @property
    def alive(self) -> bool:
        return super().alive and self._syncer is not None and self._syncer.is_alive()

    # -- submission and queries ------------------------------------------------------------
    @_answering
    def submit_many(self, jobs: list[Job]) -> list[Job]:
        return self._submit(jobs)

    @_answering
    def submit_unless_running(self, job: Job) -> Job:
        return self._submit([job], unless=(job.kind, job.model))[0]

    def _submit(self, jobs: list[Job], unless: tuple[str, str] | None = None) -> list[Job]:
        self._admit(jobs)
        args: list[Any] = [self.keys.prefix, self.queue_depth, *(unless or ("", "")), len(jobs)]
        for job in jobs:
            fields, _ = encode_fields({k: v for k, v in job.row().items() if k != "state"})
            args += [
                job.id,
                self.lane_names[job.kind],
                job.priority,
                member(job.created_at, job.id),
                encode(job.created_at),
            ]
            args += [len(fields), *(x for kv in fields.items() for x in kv)]
        ids = {job.id for job in jobs}
        with self._lock:  # known before a lane here can take them: the lane runs these very objects
            for job in jobs:
                self._know(job)
            self._submitting |= ids  # no record yet: _refresh must not take that for a deleted job
        try:
            answer = self._scripts["SUBMIT"](args=args)
        except BaseException:
            self._forget(jobs)
            raise
        finally:
            with self._lock:
                self._submitting -= ids
        if answer[0] != "ok":
            self._forget(jobs)
        if answer[0] == "full":
            metrics.JOBS_REJECTED.inc()
            queued = int(answer[1])
            raise QueueFull(queued, self._retry_after_s(queued + len(jobs) - self.queue_depth))
        if answer[0] == "duplicate":
            raise ValueError(f"a job with id {answer[1]} exists")
        if answer[0] == "exists":
            return [self.get(answer[1])]
        for job in jobs:
            metrics.JOBS_SUBMITTED.labels(job.kind).inc()
        return jobs

    @_answering
    def get(self, job_id: str) -> Job:
        with self._lock:
            held = self._held.get(job_id)
        if held is not None:
            return held.job  # its progress here is fresher than the record's
        raw = self.store.raw(job_id)
        if not raw or raw.get("kind") not in self.request_types:
            raise JobNotFound(job_id)
        job = self._object(raw)
        if job.after is not None and job.state == "queued":  # its view shows the download it waits for
            before = self.store.raw(job.after)
            job.waits_for = self._object(before) if before and before.get("kind") in self.request_types else None
        return job

    @_answering
    def find(self, kind: str, model: str) -> Job | None:
        rows = [r for r in self.store.raw_many(self.store.unfinished_ids()) if r.get("kind") == kind]
        matches = [r for r in rows if r.get("model") == model]
        return self._object(min(matches, key=lambda r: float(r["created_at"]))) if matches else None

    @_answering
    def position(self, job: Job) -> int | None:
        if job.state != "queued" or job.kind not in self.lane_names:
            return None
        return self.redis.zrank(self.keys.ready(self.lane_names[job.kind]), member(job.created_at, job.id))

    @_answering
    def list(self, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        raws, total = self.store.page_raw(state, limit, offset)
        jobs = []
        for raw in raws:
            if raw.get("kind") not in self.request_types:
                continue
            with self._lock:
                held = self._held.get(raw["id"])
            jobs.append(held.job if held is not None else self._object(raw))
        return jobs, total

    @_answering
    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.finished:
            return job
        answer = self._scripts["END_QUEUED"](args=[self.keys.prefix, job.id, "cancelled", encode(time.time()), "1", 0])
        if answer == "ended":
            self._object(self.store.raw(job.id))  # the local object ends too
        elif answer == "flagged":
            with self._lock:
                held = self._held.get(job.id)
            if held is not None:  # runs here: its lane sees it at its next step
                held.job.cancel_requested.set()
        return job

    @_answering
    def counts(self) -> tuple[int, int]:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self.keys.state("queued"))
            pipe.zcard(self.keys.state("running"))
            queued, running = pipe.execute()
        return queued, running

    @_answering
    def busy_models(self) -> set[str]:
        return {r["model"] for r in self.store.raw_many(self.store.unfinished_ids()) if r}

    async def wait(self, job: Job) -> Job:
        """Until the record says the job ended (the local object ends first, as a rule; when it ended
        on a lost attempt here, the job runs elsewhere and the record decides)."""
        import asyncio

        while True:
            await super().wait(job)
            raw = await asyncio.to_thread(self._record, job.id)
            if not raw or raw.get("state") in FINAL_STATES:
                if raw:
                    self._absorb(job, raw)
                return job
            await asyncio.sleep(TICK_S)

    @_answering
    def _record(self, job_id: str) -> dict[str, str]:
        return self.store.raw(job_id)

    # -- streamed audio: a Redis stream per job (server/jobs/cluster/feed.py) ----------------------
    def _binary(self) -> redis.Redis:
        if self._bytes is None:
            self._bytes = feed.binary_client(self.redis)
        return self._bytes

    def open_feed(self, job: Job, channels: int) -> feed.RedisFeedWriter:
        """A new attempt's stream starts empty (an earlier attempt's blocks would come twice)."""
        writer = feed.RedisFeedWriter(self._binary(), self.keys.audio(job.id), attempt=job.attempts)
        try:
            self._binary().delete(writer.key)
        except redis.RedisError as exc:
            self._unreachable(exc)
        job.on_done(lambda: writer.close(job.state))
        return writer

    def follow(self, job: Job, channels: int):
        if job.finished:
            return None

        def ended() -> bool:
            raw = self.store.raw(job.id)
            return not raw or raw.get("state") in FINAL_STATES

        return feed.follow(self._binary(), self.keys.audio(job.id), channels, ended, self.store.where)

    # -- for the lanes -----------------------------------------------------------------------
    def take(self, lane: Lane, limit: int, block: bool, fits: Fits | None = None) -> list[Job]:
        failures = 0
        while not self._stopping:
            try:
                last, ready, since = self._ready(lane)
                ready = self._placed(lane, ready, since)
                if ready:
                    head = ready[0]
                    if fits is not None and not fits(head, head):
                        return []
                    taken = self._claim(lane, [j for j in ready if fits is None or fits(head, j)][:limit])
                    if taken:
                        return taken
                    continue  # another worker was first: look again
                if not block:
                    return []
                self.redis.xread({self.keys.notify: last}, count=1, block=NOTIFY_BLOCK_MS)
                failures = 0
            except redis.RedisError as exc:
                if not block:
                    return []
                self._unreachable(exc)
                self._halt.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
        return []

    def wake(self) -> None:
        try:
            self.redis.xadd(self.keys.notify, {"n": "1"}, maxlen=1000, approximate=True)
        except redis.RedisError:
            pass  # lanes look again within NOTIFY_BLOCK_MS anyway

    def reap(self) -> int:
        """Jobs held by workers silent for visibility_s go back to the queue (any worker runs this)."""
        idle_ms = int(self.visibility_s * 1000)
        return sum(
            self._reclaim(lane, "idle", [], idle_ms, announce=True) for lane in sorted(set(self.lane_names.values()))
        )

    # -- internals: Retry-After ----------------------------------------------------------------
    def _retry_after_s(self, need: int) -> int:
        """As the embedded queue's (JobQueue._room_in_s), from what Redis holds: each lane's queued
        jobs (its ready set, in order) and running ones (the objects of the jobs this process runs,
        whose ETA is fresher than the record's), the speed every worker measured, and the lane's
        width times the workers that heartbeat."""
        lanes = sorted(set(self.lane_names.values()))
        with self.redis.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.zrange(self.keys.ready(lane), 0, -1)
            pipe.zrange(self.keys.state("running"), 0, -1)
            *ready, running_ids = pipe.execute()
        queued_ids = [[m.rsplit(":", 1)[1] for m in members] for members in ready]
        jobs = self._snapshot([i for ids in queued_ids for i in ids] + list(running_ids))
        workers = self._workers()
        loads = []
        for lane, ids in zip(lanes, queued_ids, strict=True):
            running = [jobs[i] for i in running_ids if i in jobs and self.lane_names.get(jobs[i].kind) == lane]
            queued = [jobs[i] for i in ids if i in jobs]
            loads.append(LaneLoad(self._width(lane) * workers, running, queued, self._group(lane)))
        throughput = self.throughput.snapshot({j.kind for j in jobs.values()})
        return self._room_in_s(need, loads, throughput)

    def _snapshot(self, ids: list[str]) -> dict[str, Job]:
        """Jobs as they are now, without making them this process's objects to follow: the ones its
        lanes run as they run them, the others from their records."""
        with self._lock:
            jobs = {i: self._held[i].job for i in ids if i in self._held}
        others = [i for i in ids if i not in jobs]
        for job_id, raw in zip(others, self.store.raw_many(others), strict=True):
            if raw and raw.get("kind") in self.request_types:
                jobs[job_id] = Job.from_row(decode_row(raw), self.request_types)
        return jobs

    def _workers(self) -> int:
        """Workers whose heartbeat has not expired (this one too, when it runs lanes)."""
        names = {w.name for w in self.workers()}
        if self.lanes:
            names.add(self.consumer)
        return max(1, len(names))

    @_answering
    def workers(self, max_age_s: float = TICK_S) -> list[WorkerInfo]:
        """The live workers' reports (their heartbeat keys); the ones read less than max_age_s ago."""
        read_at, peers = self._peers
        now = time.time()
        if now - read_at < max_age_s:
            return peers
        keys = sorted(self.redis.scan_iter(match=f"{self.keys.worker('')}*", count=1000))
        values = self.redis.mget(keys) if keys else []
        peers = [info for info in (workers.parse(v, now) for v in values) if info is not None]
        self._peers = (now, peers)
        return peers

    def _width(self, lane: str) -> int:
        local = next((x for x in self.lanes if x.name == lane), None)
        return local.capacity if local is not None else max(1, self._widths.get(lane, 1))

    def _group(self, lane: str) -> Callable[[Job], Hashable | None]:
        local = next((x for x in self.lanes if x.name == lane), None)
        return local.group if local is not None else GROUPS.get(lane, _no_group)

    def stats(self) -> dict[str, int]:
        """Counters over the queue's life: finished, dropped (late finishes refused), reclaimed."""
        return {k: int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}

    # -- internals: the local objects ---------------------------------------------------------
    def _know(self, job: Job) -> None:
        """Called with the lock held, once per object: it is the one for its id from now on."""
        self._jobs[job.id] = job
        job.on_done(lambda: self._finished(job))

    def _forget(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                if self._jobs.get(job.id) is job:
                    del self._jobs[job.id]

    def _object(self, raw: dict[str, str]) -> Job:
        """The one object for this record (made when there is none yet), brought up to date."""
        row = decode_row(raw)
        with self._lock:
            job = self._jobs.get(row["id"])
            if job is None:
                job = Job.from_row(row, self.request_types)
                if not job.finished:
                    self._know(job)
        self._absorb(job, raw, row)
        return job

    def _absorb(self, job: Job, raw: dict[str, str], row: dict[str, Any] | None = None) -> None:
        """The record's news into the local object. A job this process runs is left alone (it is the
        news), and a finished object takes only a finished record (never an older running one)."""
        row = row or decode_row(raw)
        with self._lock:
            if job.id in self._held:
                return
            final = row["state"] in FINAL_STATES
            if job.finished and not final:
                return
            job.progress, job.eta_s = row["progress"], row["eta_s"]
            job.started_at, job.attempts = row["started_at"], row["attempts"]
            if raw.get("detail"):
                job.detail = parse_detail(raw["detail"])
            if not final:
                job.state = row["state"]
                return
            job.result = row["result"]
        if not job.finished:
            job.finish(row["state"], row["error"])
        job.state, job.error, job.finished_at = row["state"], row["error"], row["finished_at"]
        job.progress, job.eta_s = row["progress"], row["eta_s"]

    def _finished(self, job: Job) -> None:
        """Runs in whichever thread ended the job (its on_done)."""
        with self._lock:
            held = self._held.get(job.id)
            if held is None or held.job is not job:  # it ended elsewhere, and this object heard it
                if self._jobs.get(job.id) is job:
                    del self._jobs[job.id]
                return
            held.finishing = True
        if held.lost:
            log.warning(
                "job %s ended here on attempt %d, which another attempt replaced: dropped", job.id, held.attempt
            )
            self._release(held)
            return
        try:
            self._write_finish(held)
        except redis.RedisError as exc:  # the sync thread retries it; heartbeats keep the job ours
            self._unreachable(exc)

    def _write_finish(self, held: Held) -> None:
        # One writer per finish: the ending thread and the sync thread's retry could both send it,
        # and the second would be counted as a late finish (dropped).
        with self._lock:
            if held.writing or self._held.get(held.job.id) is not held:
                return
            held.writing = True
        try:
            self._send_finish(held)
        finally:
            held.writing = False

    def _send_finish(self, held: Held) -> None:
        job = held.job
        fields, gone = encode_fields(
            {
                "progress": job.progress,
                "eta_s": job.eta_s,
                "error": job.error,
                "result": job.result,
            }
        )
        finished_at = job.finished_at or time.time()
        args = [
            self.keys.prefix,
            GROUP,
            job.id,
            held.attempt,
            self.consumer,
            job.state,
            encode(finished_at),
        ]
        args += [len(fields), *(x for kv in fields.items() for x in kv), len(gone), *gone]
        if self._scripts["FINISH"](args=args):
            metrics.JOBS_FINISHED.labels(job.kind, job.state).inc()
            try:
                self.throughput.record(job)  # once per job: a finish that came late is not measured
            except redis.RedisError as exc:  # a sample lost; the finish is written, not to be retried
                self._unreachable(exc)
        else:
            log.warning(
                "job %s: the finish of attempt %d came late (another attempt has it): dropped", job.id, held.attempt
            )
        self._release(held)

    def _release(self, held: Held) -> None:
        with self._lock:
            if self._held.get(held.job.id) is held:
                del self._held[held.job.id]
            if self._jobs.get(held.job.id) is held.job:
                del self._jobs[held.job.id]

    # -- internals: taking work ------------------------------------------------------------
    def _ready(self, lane: Lane) -> tuple[str, list[Job], dict[str, float]]:
        """(the notify stream's last id, the lane's queued jobs that can run now, when each became
        ready). A job whose predecessor did not succeed fails with its error."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrevrange(self.keys.notify, count=1)
            pipe.zrange(self.keys.ready(lane.name), 0, -1)
            last_entry, members = pipe.execute()
        last = last_entry[0][0] if last_entry else "0-0"
        ids = [m.rsplit(":", 1)[1] for m in members]
        with self._lock:
            known = {i: self._jobs[i] for i in ids if i in self._jobs}
        unknown = [i for i in ids if i not in known]
        for job_id, raw in zip(unknown, self.store.raw_many(unknown), strict=True):
            if raw and raw.get("kind") in self.request_types:
                known[job_id] = self._object(raw)
        jobs = [known[i] for i in ids if i in known and not known[i].finished]
        waiting = [j for j in jobs if j.after is not None]
        before = dict(zip([j.id for j in waiting], self.store.raw_many([j.after for j in waiting]), strict=True))
        ready, since = [], {}
        for job in jobs:
            pred = before.get(job.id)
            if job.after is None or not pred or pred.get("state") == "succeeded":
                ready.append(job)
                since[job.id] = max(job.created_at, float(pred.get("finished_at") or 0) if pred else 0.0)
            elif pred.get("state") in FINAL_STATES:
                row = decode_row(pred)
                self._fail_queued(job, predecessor_error(row["kind"], row["id"], row["state"], row["error"]))
        return last, ready, since

    def _placed(self, lane: Lane, ready: list[Job], since: dict[str, float]) -> list[Job]:
        """The ready jobs this worker should take (workers.place): the others are left to a worker that
        has their model, and a job no worker can load fails."""
        if self.models is None or not lane.loads_models or not ready:
            return ready
        others = [w for w in self.workers() if w.name != self.consumer]
        loaded, now = set(self.models.loaded()), time.time()
        installed: dict[str, bool] = {}
        mine = []
        for job in ready:
            if job.model not in installed:
                installed[job.model] = self.models.is_installed(job.model)
            verdict = workers.place(
                lane.name,
                job.model,
                installed_here=installed[job.model],
                loaded_here=job.model in loaded,
                others=others,
                ready_since=since[job.id],
                now=now,
            )
            if verdict == workers.TAKE:
                mine.append(job)
            elif verdict == workers.FAIL:
                names = [self.consumer, *(w.name for w in others if lane.name in w.lanes)]
                self._fail_queued(job, workers.NoWorkerHasModel(job.model, names))
        return mine

    def _fail_queued(self, job: Job, error: ErrorBody | ServiceError) -> None:
        body = ErrorBody.of(error) if isinstance(error, ServiceError) else error
        args = [self.keys.prefix, job.id, "failed", encode(time.time()), "0", 1, "error", encode(body)]
        if self._scripts["END_QUEUED"](args=args) == "ended":
            self._object(self.store.raw(job.id))

    def _claim(self, lane: Lane, chosen: list[Job]) -> list[Job]:
        if not chosen:
            return []
        now = time.time()  # jobs that start together share their start time
        args = [self.keys.prefix, lane.name, GROUP, self.consumer, encode(now)]
        answer = self._scripts["CLAIM"](args=args + [member(j.created_at, j.id) for j in chosen])
        by_id = {j.id: j for j in chosen}
        taken = []
        with self._lock:
            for i in range(0, len(answer), 3):
                job = by_id[answer[i]]
                job.state, job.started_at, job.attempts = "running", now, int(answer[i + 1])
                job.progress, job.eta_s = 0.0, None
                self._held[job.id] = Held(job, lane.name, int(answer[i + 1]), answer[i + 2])
                taken.append(job)
        return taken

    def _reclaim(self, lane: str, mode: str, entries: list[str], idle_ms: int = 0, announce: bool = False) -> int:
        """Back to the queue (scripts.RECLAIM); `announce`: each job's lane hears of it (Lane.recover)."""
        if mode == "these" and not entries:
            return 0
        args = [self.keys.prefix, lane, GROUP, self.consumer, idle_ms, 100, encode(time.time()), mode, *entries]
        answer = self._scripts["RECLAIM"](args=args)
        for i in range(0, len(answer), 2):
            job_id, outcome = answer[i], answer[i + 1]
            if mode == "idle":
                log.warning(
                    "job %s: its worker went silent; %s",
                    job_id,
                    "cancelled" if outcome == "cancelled" else "queued again",
                )
            if not announce:
                continue
            raw = self.store.raw(job_id)
            if raw and raw.get("kind") in self._lane_of:
                self._lane_of[raw["kind"]].recover(self._object(raw))
        return len(answer) // 2

    # -- internals: the sync thread ------------------------------------------------------------
    def _sync(self) -> None:
        """Every TICK_S: finishes still owed, heartbeats, reaping, the queue depth. In between it
        waits on the notify stream, which gets a line per finish, so a job that ends on another
        worker ends here (and its HTTP wait) at once, not up to a tick later: polling alone put a
        median 281 ms on every clustered request (bench/cluster.py --paired 40 --tiny)."""
        last, tick_at = None, 0.0
        while not self._halt.is_set():
            try:
                last = self._await_notice(last, max(0.0, tick_at - time.monotonic()))
                self._refresh()
                if time.monotonic() < tick_at or self._halt.is_set():
                    continue
                tick_at = time.monotonic() + TICK_S
                self._flush_finishes()
                self._heartbeat()
                if self.lanes and time.monotonic() >= self._reap_at:
                    self._reap_at = time.monotonic() + self.visibility_s / 2
                    self.reap()
                queued, _ = self.counts()
                metrics.QUEUE_DEPTH.set(queued)
            except (redis.RedisError, QueueUnavailable) as exc:
                # Back from an outage, others need time to heartbeat before anyone's jobs look dead.
                self._reap_at = time.monotonic() + self.visibility_s
                self._unreachable(exc)
                last = None
                self._halt.wait(TICK_S)
            except Exception:  # the thread must outlive anything one round does
                log.exception("the queue's sync thread")
                self._halt.wait(TICK_S)

    def _await_notice(self, last: str | None, timeout_s: float) -> str:
        """Until the notify stream has a line after `last` (None: from now), or timeout_s; returns
        the newest id seen. Reading from an id, not from "$", misses nothing between two calls."""
        if last is None:
            newest = self.redis.xrevrange(self.keys.notify, count=1)
            last = newest[0][0] if newest else "0-0"
        if timeout_s <= 0:
            return last
        # XREAD's BLOCK 0 means for ever: at least a millisecond.
        answer = self.redis.xread({self.keys.notify: last}, count=100, block=max(1, round(timeout_s * 1000)))
        for _stream, entries in answer or ():
            if entries:
                last = entries[-1][0]
        return last

    def _flush_finishes(self) -> None:
        with self._lock:
            pending = [h for h in self._held.values() if h.finishing and not h.lost]
        for held in pending:
            self._write_finish(held)

    def _heartbeat(self) -> None:
        if not self.lanes:  # an API node holds nothing
            return
        with self._lock:
            held = list(self._held.values())
        args: list[Any] = [
            self.keys.prefix,
            GROUP,
            self.consumer,
            self._advert(held),
            max(1, round(self.visibility_s)),
            len(held),
        ]
        for h in held:
            job = h.job
            detail = job.detail.model_dump_json() if job.detail is not None else ""
            eta = "" if job.eta_s is None else encode(float(job.eta_s))
            args += [
                job.id,
                h.attempt,
                h.lane,
                h.entry,
                "0" if h.finishing else "1",
                encode(float(job.progress)),
                eta,
                detail,
            ]
        answer = self._scripts["TICK"](args=args)
        for h, status in zip(held, answer, strict=True):
            if status == "cancel":
                h.job.cancel_requested.set()
            elif status == "lost" and not h.lost:
                h.lost = True
                log.warning("job %s (attempt %d) was given to another worker; stopping it here", h.job.id, h.attempt)
                h.job.cancel_requested.set()  # stops the work; its finish is dropped (_finished)
                if h.finishing:
                    self._release(h)

    def _advert(self, held: list[Held]) -> str:
        """This worker's WorkerInfo, as JSON, for its heartbeat key."""
        now = time.time()
        slots = {}
        for lane in self.lanes:
            running = [h.job for h in held if h.lane == lane.name and not h.finishing]
            slots[lane.name] = LaneSlots(
                capacity=lane.capacity, busy=len(running), models=sorted({j.model for j in running})
            )
        if self.models is not None and self._installed is not None:
            device, loaded = self.models.device, sorted(self.models.loaded())
            installed, installed_at = self._installed.get()
        else:  # a queue built without a registry (tests): no model, and it knows it now
            device, loaded, installed, installed_at = "", [], [], now
        info = WorkerInfo(
            name=self.consumer,
            host=socket.gethostname(),
            pid=os.getpid(),
            device=device,
            heartbeat_at=now,
            loaded=loaded,
            installed=installed,
            installed_at=installed_at,
            lanes=slots,
        )
        return info.model_dump_json()

    def _refresh(self) -> None:
        """Jobs known here that run elsewhere: a finished record ends the local object (its waits)."""
        with self._lock:
            watched = [j for i, j in self._jobs.items() if i not in self._held and i not in self._submitting]
        if not watched:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for job in watched:
                pipe.hget(self.keys.job(job.id), "state")
            states = pipe.execute()
        ended = [j for j, s in zip(watched, states, strict=True) if s in FINAL_STATES or s is None]
        for job, raw in zip(ended, self.store.raw_many([j.id for j in ended]), strict=True):
            if raw:
                self._absorb(job, raw)
            else:  # deleted (retention): nothing more will be heard of it
                self._forget([job])

    def _unreachable(self, exc: Exception) -> None:
        if time.monotonic() >= self._quiet_until:
            self._quiet_until = time.monotonic() + 10.0
            log.warning("the job queue (Redis at %s) is unreachable: %s; retrying", self.store.where, exc)


def _no_group(_job: Job) -> Hashable | None:
    return None
