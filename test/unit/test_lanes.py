"""The one queue with more than one lane: a lane owns its kinds, a job may run after another (stored,
so it waits again after a restart), and the queue's calls work the same for every kind.

Two small lanes stand in for real ones: no torch, no models. Each runs a job when the test releases it.
"""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import BaseModel, ConfigDict

from lib.errors import Unavailable
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.lane import WorkerLane

HANG_GUARD_S = 10.0


class Fetch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str


class Render(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class GatedLane(WorkerLane):
    """Runs each job once the test calls release(job_id, outcome)."""

    def __init__(self, name: str, kinds: dict[str, type[BaseModel]], workers: int = 1):
        super().__init__(workers=workers)
        self.name, self.kinds = name, kinds
        self.ran: list[str] = []
        self.recovered: list[str] = []
        self._outcomes: dict[str, str] = {}
        self._cond = threading.Condition()

    def recover(self, job: Job) -> None:
        self.recovered.append(job.id)

    def release(self, job_id: str, outcome: str = "succeeded") -> None:
        with self._cond:
            self._outcomes[job_id] = outcome
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._outcomes["*"] = "stop"
            self._cond.notify_all()
        super().stop()

    def run(self, job: Job) -> None:
        self.ran.append(job.id)
        with self._cond:
            assert self._cond.wait_for(lambda: job.id in self._outcomes or "*" in self._outcomes, HANG_GUARD_S)
            outcome = self._outcomes.get(job.id)
        if outcome == "succeeded":
            job.finish("succeeded")
        elif outcome == "failed":
            job.finish("failed", Unavailable("the hub is unreachable", code="fetch_failed"))


def wait_until(condition, what: str) -> None:
    give_up = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < give_up, f"hang guard: {what} did not happen"
        time.sleep(0.001)


def done(job: Job) -> None:
    event = threading.Event()
    job.on_done(event.set)
    assert event.wait(HANG_GUARD_S), f"job {job.id} ({job.state}) did not finish"


@pytest.fixture
def queue(tmp_path, backend):
    """make() -> (queue, its fetch lane, its render lane), on each backend (test/job_backends.py)."""
    made = []

    def make():
        fetch = GatedLane("fetch", {"fetch": Fetch}, workers=2)  # two downloads at once
        render = GatedLane("render", {"render": Render})
        sched = backend.queue(
            [fetch, render],
            store=backend.store(),
            artifacts=ArtifactStore(tmp_path / "artifacts"),
            queue_depth=10,
            retention_s=3600,
            **({"consumer": f"worker-{len(made)}"} if backend.name == "redis" else {}),
        )
        made.append(sched)
        return sched, fetch, render

    yield make
    for sched in made:
        sched.stop(timeout_s=0)
        sched.store.close()


def fetch_job(model: str = "m") -> Job:
    return Job(kind="fetch", model=model, request=Fetch(model=model), seed=0)


def render_job(model: str = "m") -> Job:
    return Job(kind="render", model=model, request=Render(text="hi"), seed=0)


def test_each_kind_goes_to_its_own_lane_and_the_queue_treats_them_alike(queue):
    sched, fetch, render = queue()
    sched.start()
    a, b = sched.submit(fetch_job()), sched.submit(render_job())
    fetch.release(a.id)
    render.release(b.id)
    done(a)
    done(b)
    assert (fetch.ran, render.ran) == ([a.id], [b.id])
    listed, total = sched.list()
    assert total == 2 and {j.kind for j in listed} == {"fetch", "render"}
    assert sched.get(a.id).state == sched.get(b.id).state == "succeeded"


def test_two_lanes_cannot_own_one_kind(tmp_path, backend):
    with pytest.raises(ValueError, match="two lanes"):
        backend.queue(
            [GatedLane("a", {"fetch": Fetch}), GatedLane("b", {"fetch": Fetch})],
            store=backend.store(),
            artifacts=ArtifactStore(tmp_path / "artifacts"),
            queue_depth=10,
            retention_s=3600,
        )


def test_a_job_runs_after_the_one_it_names_and_fails_with_its_error(queue):
    sched, fetch, render = queue()
    sched.start()
    first, doomed_first = sched.submit(fetch_job("m1")), sched.submit(fetch_job("m2"))
    after = render_job("m1")
    after.run_after(first)
    doomed = render_job("m2")
    doomed.run_after(doomed_first)
    sched.submit_many([after, doomed])
    assert render.ran == [] and sched.position(after) == 0

    fetch.release(doomed_first.id, "failed")
    done(doomed)
    assert (doomed.state, doomed.error.code, doomed.error.status) == ("failed", "fetch_failed", 503)
    assert render.ran == []

    fetch.release(first.id)
    done(first)
    render.release(after.id)
    done(after)
    assert render.ran == [after.id] and after.state == "succeeded"


def test_a_recovered_job_waits_again_for_the_job_it_runs_after(queue, backend):
    """`after` is stored: after a restart, the job waits for its (recovered) predecessor again. (The
    embedded queue recovers its unfinished rows into memory, each lane hearing of its own; on Redis
    queued jobs simply stay in their ready sets: no lane has anything to recover.)"""
    sched, fetch, _ = queue()
    first = fetch_job()
    then = render_job()
    then.run_after(first)
    sched.submit_many([first, then])  # never started: the rows stay queued, as after a crash
    sched.store.close()

    again, fetch2, render2 = queue()
    again.start()
    recovered = sorted([first.id, then.id]) if backend.name == "sqlite" else []
    assert sorted(fetch2.recovered + render2.recovered) == recovered
    assert render2.ran == []
    fetch2.release(first.id)
    recovered_then = again.get(then.id)
    render2.release(then.id)
    done(recovered_then)
    assert render2.ran == [then.id] and recovered_then.attempts == 1


def test_cancel_and_position_work_for_every_lane(queue):
    sched, fetch, _ = queue()
    sched.start()
    running = [sched.submit(fetch_job("a")), sched.submit(fetch_job("b"))]
    wait_until(lambda: all(j.state == "running" for j in running), "both workers to start a job")
    queued = sched.submit(fetch_job("c"))
    assert sched.position(queued) == 0 and sched.counts() == (1, 2)
    sched.cancel(queued.id)
    assert queued.state == "cancelled" and sorted(fetch.ran) == sorted(j.id for j in running)
    for job in running:
        fetch.release(job.id)
        done(job)
