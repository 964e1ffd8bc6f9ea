"""The job queue (server/jobs/scheduler.py) and its decode lane with a fake runner: no torch, no
models, no sleeps.

The fake runner stands where BatchRunner does (the decode lane gets it from its `new_runner(kind,
model)` factory). A job needs as many steps as its request has seconds of duration; each step
advances every job in the batch by one and finishes those that are done. Every step waits at a gate
that the test opens (`runners.step()`), so the test decides when each step happens, and the test
knows the worker's admissions for a step are done once the worker waits at that step's gate.

Nothing here asserts on wall time. Waits are on conditions (the gate, `job.on_done`); their
HANG_GUARD_S timeout only turns a hang into a failure that says what never happened. The stop
deadline is read from a fake monotonic clock that moves only when a test moves it.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lib.schemas import ErrorBody, MusicRequest
from server.jobs import backlog
from server.jobs import queue as queue_module
from server.jobs import scheduler as scheduler_module
from server.jobs.artifacts import ArtifactStore
from server.jobs.errors import JobNotFound, QueueFull, TooManyJobs
from server.jobs.job import Job
from server.jobs.lanes.decode import DecodeLane
from server.jobs.scheduler import Scheduler
from server.jobs.store import JobStore

HANG_GUARD_S = 10.0

SMALL, MEDIUM, LARGE = "musicgen-small", "musicgen-medium", "musicgen-large"

_created = itertools.count()
_BASE = time.time()


def make_job(steps: int = 1, model: str = SMALL, priority: int = 10, seed: int | None = None) -> Job:
    """A music job the fake runner finishes in `steps` steps. Jobs are created in call order, each
    a millisecond after the last, so ties on priority are decided by call order, not by the clock."""
    n = next(_created)
    return Job(
        kind="music",
        model=model,
        request=MusicRequest(prompt=f"test {n}", duration=steps),
        seed=seed if seed is not None else 1000 + n,
        priority=priority,
        created_at=_BASE + n / 1000,
    )


def steps_for(job: Job) -> int:
    return round(job.request.duration)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll for a condition the code under test gives no event for."""
    give_up = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"hang guard: {what} did not happen within {HANG_GUARD_S:g} s")
        time.sleep(0.001)


def wait_done(*jobs: Job) -> None:
    for job in jobs:
        done = threading.Event()
        job.on_done(done.set)
        if not done.wait(HANG_GUARD_S):
            pytest.fail(f"hang guard: job {job.id} ({job.state}) did not finish within {HANG_GUARD_S:g} s")


class FakeClock:
    """Stands in for the scheduler module's `time`: wall time is real, the monotonic clock (which
    only the stop deadline reads) moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return self.now


class FakeRunners:
    """The runner factory the scheduler gets, the step gate its runners share, and a record of what
    they saw."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._arrived = 0  # steps the worker has reached the gate of
        self._allowed = 0  # steps the test has let through
        self._done = 0  # steps that have finished
        self._free = False
        self.runners: list[FakeRunner] = []
        self.admitted: list[str] = []  # job ids, in admission order
        self.batches: list[tuple[str, list[str]]] = []  # (model, job ids in the batch) per step
        self.interrupted: list[str] = []
        self.fail_next_step: Exception | None = None

    def __call__(self, kind: str, model: str) -> FakeRunner:
        runner = FakeRunner(self, kind, model)
        self.runners.append(runner)
        return runner

    @property
    def models(self) -> list[str]:
        """The model of each runner the scheduler made, in order: one per batch."""
        return [r.model for r in self.runners]

    # -- the worker's side --------------------------------------------------------------------
    def gate(self) -> None:
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._free or self._allowed >= self._arrived)

    def step_done(self) -> None:
        with self._cond:
            self._done += 1
            self._cond.notify_all()

    # -- the test's side ----------------------------------------------------------------------
    def wait_at_gate(self) -> None:
        """Until the worker waits at the next step's gate: its admissions for that step are done."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._arrived > self._done, HANG_GUARD_S):
                pytest.fail(f"hang guard: the worker never reached step {self._done + 1}")

    def step(self, n: int = 1) -> list[list[str]]:
        """Let n steps happen, one at a time; the job ids in each of those steps' batches."""
        for _ in range(n):
            self.wait_at_gate()
            with self._cond:
                self._allowed += 1
                self._cond.notify_all()
                if not self._cond.wait_for(lambda: self._done >= self._allowed, HANG_GUARD_S):
                    pytest.fail(f"hang guard: step {self._allowed} never finished")
        return [ids for _, ids in self.batches[-n:]]

    def run_freely(self) -> None:
        """Open the gate for good."""
        with self._cond:
            self._free = True
            self._cond.notify_all()


class FakeRunner:
    """BatchRunner's contract: accepts / admit / step / __len__ / interrupt / fail_all. A runner
    ends a job with job.finish(...); the scheduler's on_done callback stores the outcome."""

    def __init__(self, runners: FakeRunners, kind: str, model: str):
        self.record, self.kind, self.model = runners, kind, model
        self.members: dict[str, Job] = {}
        self.left: dict[str, int] = {}

    def accepts(self, job: Job) -> bool:
        return job.kind == self.kind and job.model == self.model

    def __len__(self) -> int:
        return len(self.members)

    @property
    def jobs(self) -> list[Job]:
        return list(self.members.values())

    def admit(self, job: Job) -> None:
        assert self.accepts(job), f"the scheduler gave a {job.model} job to the {self.model} runner"
        self.record.admitted.append(job.id)
        self.members[job.id] = job
        self.left[job.id] = steps_for(job)

    def step(self) -> None:
        self.record.gate()
        try:
            self.record.batches.append((self.model, list(self.members)))
            if self.record.fail_next_step is not None:
                exc, self.record.fail_next_step = self.record.fail_next_step, None
                raise exc
            for job_id, job in list(self.members.items()):
                self.left[job_id] -= 1
                if self.left[job_id] == 0:
                    del self.members[job_id]
                    job.finish("succeeded")
                    continue
                job.progress = 1 - self.left[job_id] / steps_for(job)
                if job.cancel_requested.is_set():  # as BatchRunner: checked at every step
                    del self.members[job_id]
                    job.finish("cancelled")
        finally:
            self.record.step_done()

    def interrupt(self) -> list[Job]:
        jobs = list(self.members.values())
        self.record.interrupted += [j.id for j in jobs]
        self.members.clear()
        return jobs

    def fail_all(self, error: ErrorBody) -> None:
        for job in self.members.values():
            job.finish("failed", error)
        self.members.clear()


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(scheduler_module, "time", fake)
    monkeypatch.setattr(queue_module, "time", fake)  # the stop deadline, which every backend shares
    return fake


@pytest.fixture
def make_scheduler(backend, tmp_path, clock):
    """make(...) -> (scheduler, its fake runners); started unless start=False. Each scheduler is
    stopped at the end of the test, its steps running freely, and its store closed. Every test that
    uses it runs against both backends (test/job_backends.py); `db` is SQLite's file (Redis: the
    test's database, whatever `db` says). On Redis each scheduler is a worker of its own name."""
    made: list[tuple[Scheduler, FakeRunners]] = []

    def make(
        *,
        max_batch: int = 4,
        queue_depth: int = 100,
        retention_s: float = 3600.0,
        db: Path | None = None,
        start: bool = True,
    ) -> tuple[Scheduler, FakeRunners]:
        runners = FakeRunners()
        sched = backend.queue(
            [DecodeLane(runners, max_batch)],
            store=backend.store(db),
            artifacts=ArtifactStore(tmp_path / "artifacts"),
            queue_depth=queue_depth,
            retention_s=retention_s,
            **({"consumer": f"worker-{len(made)}"} if backend.name == "redis" else {}),
        )
        made.append((sched, runners))
        if start:
            sched.start()
        return sched, runners

    yield make
    for sched, runners in made:
        runners.run_freely()
        sched.stop(timeout_s=0)
        assert not sched.alive, "a scheduler's worker outlived stop()"
        sched.store.close()


def stored_state(sched: Scheduler, job: Job) -> str:
    row = sched.store.get(job.id)
    assert row is not None, f"job {job.id} is not in the store"
    return row["state"]


def stop_in_background(sched: Scheduler, timeout_s: float) -> threading.Thread:
    """stop() blocks until the worker ends; run it aside and return once it has taken effect."""
    thread = threading.Thread(target=sched.stop, args=(timeout_s,), daemon=True)
    thread.start()
    wait_until(lambda: sched._stopping, "stop() taking effect")
    return thread


def joined(thread: threading.Thread) -> bool:
    thread.join(HANG_GUARD_S)
    return not thread.is_alive()


# ----------------------------------------------------------------------------------- priority
def test_lower_priority_value_runs_first_and_ties_go_by_creation_time(make_scheduler):
    sched, runners = make_scheduler(max_batch=1)
    bulk_1 = make_job(priority=10)
    urgent_1 = make_job(priority=0)
    bulk_2 = make_job(priority=10)
    urgent_2 = make_job(priority=0)
    # Submitted in one call (so the worker sees them all at once), in neither order.
    jobs = [bulk_2, urgent_2, bulk_1, urgent_1]
    sched.submit_many(jobs)

    runners.wait_at_gate()
    assert urgent_1.state == "running"
    assert [sched.position(j) for j in (urgent_2, bulk_1, bulk_2)] == [0, 1, 2]
    runners.step(4)

    assert runners.admitted == [j.id for j in (urgent_1, urgent_2, bulk_1, bulk_2)]
    assert all(j.state == "succeeded" and stored_state(sched, j) == "succeeded" for j in jobs)


def test_a_job_submitted_later_but_more_urgent_runs_next(make_scheduler):
    """No preemption: the running job finishes; then the most urgent queued job goes first."""
    sched, runners = make_scheduler(max_batch=1)
    running = sched.submit(make_job(steps=2, priority=10))
    runners.wait_at_gate()
    bulk = sched.submit(make_job(priority=10))
    interactive = sched.submit(make_job(priority=0))
    assert runners.step(2) == [[running.id], [running.id]]
    runners.step(2)
    assert runners.admitted == [running.id, interactive.id, bulk.id]


# --------------------------------------------------------------------- admission into a batch
def test_a_same_model_job_joins_the_running_batch_between_steps_up_to_max_batch(make_scheduler):
    sched, runners = make_scheduler(max_batch=2)
    a = sched.submit(make_job(steps=3))
    runners.wait_at_gate()  # a's first step is about to happen
    b = sched.submit(make_job(steps=3))
    c = sched.submit(make_job(steps=3))
    assert b.state == c.state == "queued"  # nothing joins in the middle of a step

    assert runners.step(1) == [[a.id]]
    runners.wait_at_gate()
    assert (b.state, c.state) == ("running", "queued")  # the batch is full at 2
    assert sched.counts() == (1, 2)
    assert sched.position(c) == 0

    runners.step(5)
    assert [ids for _, ids in runners.batches] == [
        [a.id],
        [a.id, b.id],
        [a.id, b.id],  # a ends here, making room...
        [b.id, c.id],  # ...which c takes at the next step boundary
        [c.id],
        [c.id],
    ]
    assert runners.models == [SMALL]  # one batch all along: it never drained
    assert a.state == b.state == c.state == "succeeded"


def test_a_job_for_another_model_waits_until_the_batch_drains(make_scheduler):
    """The most urgent queued job needs another model, so nothing joins the running batch, not
    even a same-model job queued behind it; the batch drains, then the next one is for it."""
    sched, runners = make_scheduler(max_batch=4)
    a = sched.submit(make_job(steps=2, model=SMALL))
    runners.wait_at_gate()
    other = sched.submit(make_job(steps=1, model=MEDIUM))
    same_but_behind = sched.submit(make_job(steps=1, model=SMALL))

    assert runners.step(2) == [[a.id], [a.id]]
    assert a.state == "succeeded"
    runners.wait_at_gate()
    assert (other.state, same_but_behind.state) == ("running", "queued")
    runners.step(2)

    assert runners.batches == [(SMALL, [a.id]), (SMALL, [a.id]), (MEDIUM, [other.id]), (SMALL, [same_but_behind.id])]
    assert runners.models == [SMALL, MEDIUM, SMALL]


def test_same_model_jobs_join_while_the_most_urgent_queued_job_is_one_of_them(make_scheduler):
    """The rule in _admissions: the batch takes its own kind+model as long as the head of the queue
    is one of them; it then takes every such job, even one queued behind another model's job."""
    sched, runners = make_scheduler(max_batch=4)
    a = sched.submit(make_job(steps=3, model=SMALL, priority=10))
    runners.wait_at_gate()
    # One call, so the worker sees the queue whole: [urgent (small), other (medium), late (small)].
    other = make_job(steps=1, model=MEDIUM, priority=10)
    urgent = make_job(steps=1, model=SMALL, priority=0)
    late = make_job(steps=1, model=SMALL, priority=20)
    sched.submit_many([other, urgent, late])

    assert runners.step(1) == [[a.id]]
    runners.wait_at_gate()
    assert (urgent.state, late.state, other.state) == ("running", "running", "queued")
    runners.step(3)
    assert runners.batches == [
        (SMALL, [a.id]),
        (SMALL, [a.id, urgent.id, late.id]),
        (SMALL, [a.id]),
        (MEDIUM, [other.id]),
    ]


# ----------------------------------------------------------------------------------- drain
def test_after_a_drain_the_next_batch_is_for_the_most_urgent_jobs_model(make_scheduler):
    sched, runners = make_scheduler(max_batch=4)
    a = sched.submit(make_job(steps=1, model=SMALL))
    runners.wait_at_gate()
    medium_first_in = sched.submit(make_job(model=MEDIUM, priority=10))
    large_more_urgent = sched.submit(make_job(model=LARGE, priority=5))
    large_second = sched.submit(make_job(model=LARGE, priority=10))
    medium_second = sched.submit(make_job(model=MEDIUM, priority=10))

    runners.step(3)
    assert runners.batches == [
        (SMALL, [a.id]),
        (LARGE, [large_more_urgent.id, large_second.id]),  # the whole queue's large jobs at once
        (MEDIUM, [medium_first_in.id, medium_second.id]),
    ]
    assert sched.counts() == (0, 0)


# ----------------------------------------------------------------------------------- cancel
def test_cancelling_a_queued_job_finishes_it_at_once_and_it_never_reaches_the_runner(make_scheduler):
    sched, runners = make_scheduler(max_batch=1)
    a = sched.submit(make_job(steps=2))
    runners.wait_at_gate()
    b = sched.submit(make_job())
    done = threading.Event()
    b.on_done(done.set)

    assert sched.cancel(b.id) is b
    assert done.is_set()  # before any step
    assert (b.state, stored_state(sched, b), sched.position(b)) == ("cancelled", "cancelled", None)
    assert b.finished_at is not None and b.started_at is None
    assert sched.counts() == (0, 1)

    runners.step(2)
    wait_done(a)
    assert runners.admitted == [a.id]
    assert sched.get(b.id).state == "cancelled"  # now read back from the store
    # Cancelling again, or cancelling a finished job, changes nothing.
    assert sched.cancel(b.id).state == "cancelled"
    assert sched.cancel(a.id).state == "succeeded"
    assert stored_state(sched, a) == "succeeded"


def test_cancelling_a_running_job_stops_it_at_its_next_step(make_scheduler):
    sched, runners = make_scheduler(max_batch=2)
    long = make_job(steps=5)
    neighbour = make_job(steps=3)
    sched.submit_many([long, neighbour])
    runners.step(1)

    assert sched.cancel(long.id) is long
    assert long.state == "running"  # the runner sees the request at its next step
    assert runners.step(1) == [[long.id, neighbour.id]]
    assert (long.state, stored_state(sched, long)) == ("cancelled", "cancelled")
    assert long.progress < 1

    assert runners.step(1) == [[neighbour.id]]  # the rest of the batch goes on
    assert neighbour.state == "succeeded"


def test_unknown_job_ids_are_not_found(make_scheduler):
    sched, _ = make_scheduler(start=False)
    with pytest.raises(JobNotFound):
        sched.get("nope")
    with pytest.raises(JobNotFound):
        sched.cancel("nope")


# ----------------------------------------------------------------------------------- recovery
@pytest.mark.sqlite_only  # a crash of SQLite's file; Redis's own: test/unit/test_redis_queue.py
def test_recovery_after_a_crash_requeues_unfinished_jobs_with_their_id_and_seed(make_scheduler, tmp_path):
    """A crash is what the store says at that moment: copy the SQLite file (and its WAL) while the
    worker holds a running batch, as a killed process would leave them, and start over on the copy."""
    first, runners = make_scheduler(max_batch=2)
    quick = make_job(steps=1, priority=0)
    long = make_job(steps=3, priority=0)
    next_in = make_job(steps=1, priority=5)
    waiting = make_job(steps=1, priority=20)
    cancelled = make_job(priority=30)
    first.submit_many([quick, long, next_in, waiting, cancelled])
    first.cancel(cancelled.id)
    runners.step(1)
    runners.wait_at_gate()  # quick has finished, next_in has joined long; nothing is being written
    assert [j.state for j in (quick, long, next_in, waiting)] == ["succeeded", "running", "running", "queued"]

    crash = tmp_path / "crash"
    crash.mkdir()
    for name in ("jobs.sqlite3", "jobs.sqlite3-wal"):
        if (tmp_path / name).exists():
            shutil.copy(tmp_path / name, crash / name)
    finished_row = first.store.get(quick.id)

    second, runners2 = make_scheduler(max_batch=1, db=crash / "jobs.sqlite3")
    runners2.wait_at_gate()
    # The most urgent of the three runs first; the others are queued, as fresh as when submitted.
    assert runners2.admitted == [long.id]
    row = second.store.get(next_in.id)
    assert (row["state"], row["progress"], row["started_at"], row["attempts"]) == ("queued", 0.0, None, 1)
    assert second.store.get(waiting.id)["state"] == "queued"
    for job in (long, next_in, waiting):
        recovered = second.get(job.id)
        assert (recovered.id, recovered.seed, recovered.request) == (job.id, job.seed, job.request)
        assert recovered is not job

    runners2.step(5)
    assert runners2.admitted == [long.id, next_in.id, waiting.id]
    for job in (long, next_in, waiting):
        row = second.store.get(job.id)
        assert (row["state"], row["seed"]) == ("succeeded", job.seed)
    assert second.store.get(long.id)["attempts"] == 2  # it had started once before the crash
    assert second.store.get(waiting.id)["attempts"] == 1
    # Finished jobs are not run again, and their rows are left as they were.
    assert second.store.get(quick.id) == finished_row
    assert second.store.get(cancelled.id)["state"] == "cancelled"


@pytest.mark.sqlite_only  # rows written straight into the file; on Redis the ready sets are the queue
def test_recovery_from_stored_rows_runs_queued_and_running_jobs_only(make_scheduler, tmp_path):
    db = tmp_path / "jobs.sqlite3"
    jobs = {state: make_job(steps=1) for state in ("queued", "running", "succeeded", "failed", "cancelled")}
    jobs["running"].priority = 0  # interrupted interactive work goes before queued bulk work
    for state, job in jobs.items():
        job.state = state
        if state == "running":
            job.started_at, job.attempts, job.progress = time.time(), 1, 0.5
        elif state != "queued":
            job.finished_at = time.time()
    store = JobStore(db)
    store.insert_many([j.row() for j in jobs.values()])
    store.close()

    sched, runners = make_scheduler(max_batch=1, db=db)
    runners.step(2)
    wait_done(sched.get(jobs["queued"].id))
    assert runners.admitted == [jobs["running"].id, jobs["queued"].id]
    assert [stored_state(sched, j) for j in jobs.values()] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert sched.counts() == (0, 0)


# ----------------------------------------------------------------------------------- stop
def test_stop_lets_running_jobs_finish_and_admits_nothing_more(make_scheduler):
    sched, runners = make_scheduler(max_batch=2)
    short = make_job(steps=1)
    running = make_job(steps=3)
    queued = make_job(steps=1)
    sched.submit_many([short, running, queued])
    runners.wait_at_gate()  # the batch is full: short and running

    stopping = stop_in_background(sched, timeout_s=30)
    # The deadline has not passed (the fake clock stands still): the batch runs to its end. The
    # room short leaves after the first step is not given to the queued job.
    assert runners.step(3) == [[short.id, running.id], [running.id], [running.id]]
    assert joined(stopping), "stop() did not return once the batch was empty"
    assert not sched.alive
    assert short.state == running.state == "succeeded"
    assert stored_state(sched, short) == stored_state(sched, running) == "succeeded"
    assert runners.admitted == [short.id, running.id]
    assert queued.state == "queued" and stored_state(sched, queued) == "queued"  # for the next start
    assert runners.interrupted == []


def test_stop_interrupts_jobs_running_past_the_deadline_and_they_run_at_the_next_start(
    make_scheduler, clock, tmp_path, backend
):
    sched, runners = make_scheduler(max_batch=2)
    short = make_job(steps=1)
    long = make_job(steps=5)
    queued = make_job(steps=1)
    sched.submit_many([short, long, queued])
    runners.step(1)  # short ends; queued takes its place in the batch
    runners.wait_at_gate()
    assert queued.state == "running"
    on_done_calls: list[str] = []
    long.on_done(lambda: on_done_calls.append(long.id))

    stopping = stop_in_background(sched, timeout_s=5)
    runners.step(1)  # queued ends within the deadline; long goes on, the deadline not passed
    assert queued.state == "succeeded"
    runners.wait_at_gate()  # the worker has checked the deadline and gone on to the next step
    assert stopping.is_alive()
    clock.now += 6  # past the deadline
    runners.step(1)  # at the end of this step the worker sees it
    assert joined(stopping), "stop() did not return after the deadline"

    assert runners.interrupted == [long.id]
    assert long.state == "running" and not long.finished and on_done_calls == []
    assert stored_state(sched, long) == backend.interrupted_state  # so the next start (or worker) runs it
    assert [ids for _, ids in runners.batches] == [[short.id, long.id], [long.id, queued.id], [long.id]]

    restarted, runners2 = make_scheduler(max_batch=2, db=tmp_path / "jobs.sqlite3")
    runners2.step(5)  # from the start again: all 5 steps
    again = restarted.get(long.id)
    wait_done(again)
    assert runners2.admitted == [long.id]  # the finished ones are not run again
    assert (again.state, again.seed, again.attempts) == ("succeeded", long.seed, 2)
    assert stored_state(restarted, long) == "succeeded"


# ----------------------------------------------------------------------------------- backpressure
def test_submit_many_is_all_or_nothing_when_the_queue_is_full(make_scheduler):
    sched, _ = make_scheduler(queue_depth=3, max_batch=1, start=False)
    sched.submit_many([make_job(), make_job()])

    rejected = [make_job(), make_job()]
    with pytest.raises(QueueFull) as err:
        sched.submit_many(rejected)
    assert err.value.depth == 2
    assert isinstance(err.value.retry_after_s, int) and err.value.retry_after_s >= 1
    assert all(sched.store.get(j.id) is None for j in rejected)
    assert sched.store.page(None, 50, 0)[1] == 2
    assert sched.counts() == (2, 0)

    sched.submit(make_job())  # exactly full
    with pytest.raises(QueueFull) as err:
        sched.submit(make_job())
    assert err.value.retry_after_s >= 1


def test_retry_after_is_at_least_a_second_even_for_quick_jobs_and_wide_batches(make_scheduler):
    sched, runners = make_scheduler(queue_depth=1, max_batch=64)
    for _ in range(3):  # some history of (very quick) job times
        job = sched.submit(make_job())
        runners.step(1)
        wait_done(job)
    sched.submit(make_job(steps=2))
    runners.wait_at_gate()
    sched.submit(make_job(model=MEDIUM))  # waits for the small batch to drain
    with pytest.raises(QueueFull) as err:
        sched.submit(make_job(model=MEDIUM))
    assert err.value.retry_after_s >= 1


class FrozenClock(FakeClock):
    """Wall time too stands still (the scheduler stamps a job's start with it): a running job's time
    left is exactly its estimated work."""

    def __init__(self) -> None:
        super().__init__()
        self.wall = 2_000_000_000.0

    def time(self) -> float:
        return self.wall


@pytest.fixture
def frozen(clock, monkeypatch) -> FrozenClock:
    """Every backend's clock: the queues stamp starts with it, and the estimate reads it."""
    from server.jobs.cluster import queue as cluster_module

    fake = FrozenClock()
    for module in (scheduler_module, queue_module, cluster_module):
        monkeypatch.setattr(module, "time", fake)
    return fake


def measured(sched: Scheduler, seconds_of_audio: float, took_s: float, n: int = 20) -> None:
    """A history of n generations that succeeded here, each of that duration and wall time."""
    for _ in range(n):
        job = make_job(steps=1)
        job.request = MusicRequest(prompt="past", duration=seconds_of_audio)
        job.state, job.started_at, job.finished_at = "succeeded", 100.0, 100.0 + took_s
        sched.throughput.record(job)


def retry_after(sched: Scheduler, jobs: list[Job]) -> int:
    with pytest.raises(QueueFull) as err:
        sched.submit_many(jobs)
    assert err.value.headers["Retry-After"] == str(err.value.retry_after_s)
    return err.value.retry_after_s


def test_retry_after_comes_from_the_queued_work_the_measured_speed_and_the_batch_width(make_scheduler, frozen):
    """The issue's case: 64 queued 30 s jobs behind a full batch of 4, with a history of 1 s jobs
    that took 0.8 s each (0.8 s per second of audio). It said 13 s: the mean job time (0.8 s)
    times 64 over 4. A slot opens when a running 30 s job ends, in 30 x 0.8 = 24 s; room for 8
    jobs once 8 queued jobs have started, two rounds of the batch later (48 s); room for a whole
    queue's worth once all 64 have started: 16 rounds (384 s)."""
    sched, runners = make_scheduler(queue_depth=64, max_batch=4)
    measured(sched, seconds_of_audio=1, took_s=0.8)
    running = sched.submit_many([make_job(steps=30) for _ in range(4)])
    runners.wait_at_gate()
    assert all(j.state == "running" for j in running)
    sched.submit_many([make_job(steps=30) for _ in range(64)])

    assert retry_after(sched, [make_job(steps=30)]) == 24
    assert retry_after(sched, [make_job(steps=30) for _ in range(8)]) == 48
    assert retry_after(sched, [make_job(steps=30) for _ in range(64)]) == 384


def test_retry_after_follows_the_durations_asked_and_the_running_jobs_eta(make_scheduler, frozen):
    sched, runners = make_scheduler(queue_depth=2, max_batch=1)
    measured(sched, seconds_of_audio=10, took_s=5)  # 0.5 s per second of audio
    long = sched.submit(make_job(steps=100))
    runners.wait_at_gate()
    sched.submit_many([make_job(steps=60), make_job(steps=2)])
    assert retry_after(sched, [make_job()]) == 50  # the running job's 100 s of audio at 0.5
    assert retry_after(sched, [make_job(), make_job()]) == 50 + 30  # then the 60 s one
    long.eta_s = 7.2  # the lane's own estimate of its time left goes first
    assert retry_after(sched, [make_job()]) == 8
    frozen.wall += 3  # time passes; without an ETA the estimate counts down
    long.eta_s = None
    assert retry_after(sched, [make_job()]) == 47


def test_retry_after_counts_the_drain_before_a_batch_of_another_model(make_scheduler, frozen):
    sched, runners = make_scheduler(queue_depth=3, max_batch=4)
    measured(sched, seconds_of_audio=1, took_s=1)
    sched.submit_many([make_job(steps=s) for s in (5, 10, 20)])  # a small batch, ends at 5, 10, 20 s
    runners.wait_at_gate()
    # The batch has room, but the most urgent queued job is for another model: it waits for the
    # drain (20 s); the small jobs behind it wait for its own batch to end (3 s more).
    sched.submit_many([make_job(steps=3, model=MEDIUM), make_job(), make_job()])
    assert retry_after(sched, [make_job()]) == 20
    assert retry_after(sched, [make_job(), make_job()]) == 23
    assert retry_after(sched, [make_job(), make_job(), make_job()]) == 23


def test_retry_after_learns_only_from_jobs_that_succeeded_and_guesses_real_time_before(make_scheduler, frozen):
    sched, runners = make_scheduler(queue_depth=1, max_batch=1)
    assert sched.throughput.seconds_per_unit("music") == 1.0  # nothing measured yet
    for state in ("failed", "cancelled"):
        job = make_job(steps=30)
        job.state, job.started_at, job.finished_at = state, 100.0, 100.5
        sched.throughput.record(job)
    assert sched.throughput.seconds_per_unit("music") == 1.0
    sched.submit(make_job(steps=12))
    runners.wait_at_gate()
    sched.submit(make_job())
    assert retry_after(sched, [make_job()]) == 12


def test_a_submission_larger_than_the_whole_queue_is_413_not_a_retry(make_scheduler):
    sched, _ = make_scheduler(queue_depth=3, start=False)
    with pytest.raises(TooManyJobs) as err:
        sched.submit_many([make_job() for _ in range(4)])
    assert err.value.status == 413 and "at most 3" in err.value.hint
    assert sched.counts() == (0, 0)


def test_start_times_take_the_slots_in_queue_order():
    jobs = [make_job(steps=s) for s in (4, 1, 1, 2)]
    starts = backlog.start_times(2, [3.0], jobs, lambda j: float(j.request.duration), lambda j: None)
    # slots free at 0 and 3: 4 s at 0 (ends 4), 1 s at 3 (ends 4), 1 s at 4 (ends 5), 2 s at 4
    assert starts == [0.0, 3.0, 4.0, 4.0]
    assert backlog.wait_for_room(starts, 3) == 4.0 and backlog.wait_for_room(starts, 0) == 0.0


def test_running_jobs_do_not_count_against_the_queue_and_a_cancel_makes_room(make_scheduler):
    sched, runners = make_scheduler(queue_depth=1, max_batch=1)
    sched.submit(make_job(steps=2))
    runners.wait_at_gate()
    waiting = sched.submit(make_job())
    with pytest.raises(QueueFull):
        sched.submit(make_job())
    sched.cancel(waiting.id)
    sched.submit(make_job())


def test_a_batch_with_a_duplicate_id_is_not_taken_at_all(make_scheduler, backend):
    sched, _ = make_scheduler(start=False)
    first = make_job()
    twin = make_job()
    twin.id = first.id
    fresh = make_job()
    with pytest.raises(backend.duplicate_error):
        sched.submit_many([fresh, first, twin])
    assert sched.store.get(fresh.id) is None and sched.store.get(first.id) is None
    assert sched.counts() == (0, 0)
    with pytest.raises(JobNotFound):
        sched.get(fresh.id)


# ----------------------------------------------------------------------------------- failures, waiting
def test_a_failing_step_fails_its_batch_and_the_worker_goes_on(make_scheduler):
    sched, runners = make_scheduler(max_batch=2)
    a, b = make_job(steps=2), make_job(steps=2)
    runners.fail_next_step = RuntimeError("boom")
    sched.submit_many([a, b])
    runners.step(1)
    wait_done(a, b)
    assert a.state == b.state == "failed"
    assert a.error.code == "generation_failed"
    assert sched.store.get(a.id)["error"] == a.error

    c = sched.submit(make_job())
    runners.step(1)
    wait_done(c)
    assert c.state == "succeeded" and sched.alive


@pytest.mark.sqlite_only  # waits_for set on live objects; `after` (stored) is in test_lanes.py, both backends
def test_a_job_waiting_for_its_models_download_runs_once_the_download_succeeds(make_scheduler):
    sched, runners = make_scheduler()
    download = make_job()  # stands for the download job: only its end matters here
    job = make_job()
    job.waits_for = download
    sched.submit(job)
    failed_download = make_job()
    doomed = make_job(model=MEDIUM)
    doomed.waits_for = failed_download
    sched.submit(doomed)

    failed_download.finish("failed", ErrorBody(code="download_failed", message="hub unreachable"))
    wait_done(doomed)
    assert (doomed.state, doomed.error.message) == ("failed", "hub unreachable")
    assert runners.admitted == [] and job.state == "queued"

    download.finish("succeeded")
    runners.step(1)
    wait_done(job)
    assert runners.admitted == [job.id]


def test_wait_returns_once_the_job_ends(make_scheduler):
    sched, runners = make_scheduler()
    job = sched.submit(make_job(steps=3))
    runners.run_freely()

    async def main() -> Job:
        return await asyncio.wait_for(sched.wait(job), HANG_GUARD_S)

    assert asyncio.run(main()).state == "succeeded"
    listed, total = sched.list()
    assert total == 1 and listed[0].state == "succeeded"


# ----------------------------------------------------------------------------------- retention
def test_clean_up_removes_old_finished_jobs_and_their_artifacts(make_scheduler):
    sched, _ = make_scheduler(retention_s=3600, start=False)
    now = time.time()
    old_ok, old_failed, recent, old_queued = make_job(), make_job(), make_job(), make_job()
    rows = []
    for job, state, finished in (
        (old_ok, "succeeded", now - 7200),
        (old_failed, "failed", now - 3700),
        (recent, "succeeded", now - 60),
        (old_queued, "queued", None),
    ):
        job.state, job.finished_at, job.created_at = state, finished, now - 8000
        rows.append(job.row())
    sched.store.insert_many(rows)
    for job in (old_ok, old_failed, recent):
        sched.artifacts.write(job.id, "master.wav", b"RIFF")
        sched.artifacts.write(job.id, "audio.wav", b"RIFF")

    assert sched.clean_up() == 2
    assert sched.store.get(old_ok.id) is None and sched.store.get(old_failed.id) is None
    assert not (sched.artifacts.root / old_ok.id).exists()
    assert not (sched.artifacts.root / old_failed.id).exists()
    assert sched.store.get(recent.id) is not None and sched.artifacts.read(recent.id, "audio.wav") == b"RIFF"
    assert sched.store.get(old_queued.id)["state"] == "queued"  # unfinished work is never cleaned up
    assert sched.clean_up() == 0


def test_start_cleans_up_before_it_runs_anything(make_scheduler, tmp_path, backend):
    db = tmp_path / "jobs.sqlite3"
    old = make_job()
    old.state, old.finished_at = "succeeded", time.time() - 7200
    store = backend.store(db)
    store.insert(old.row())
    store.close()
    ArtifactStore(tmp_path / "artifacts").write(old.id, "audio.wav", b"RIFF")

    sched, _ = make_scheduler(retention_s=3600, db=db)
    assert sched.store.get(old.id) is None
    assert not (tmp_path / "artifacts" / old.id).exists()


def test_a_job_submitted_before_start_runs_once(make_scheduler):
    """start() recovers the store's unfinished rows; one that is already live is not tracked twice."""
    sched, runners = make_scheduler(start=False)
    job = make_job(steps=1)
    sched.submit(job)
    sched.start()
    runners.step(1)
    wait_done(job)
    runners.run_freely()
    sched.stop(timeout_s=0)
    assert runners.admitted == [job.id]
    assert sched.store.get(job.id)["attempts"] == 1
