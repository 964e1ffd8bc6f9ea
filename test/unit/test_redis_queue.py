"""What only the Redis queue has: several workers on one queue, a silent worker's jobs claimed by
another (XAUTOCLAIM past the visibility timeout), the fence that drops a presumed-dead worker's late
finish, a cancel that reaches another worker, progress written for other processes to read, and a
503 that says so while Redis is out of reach. (What both backends share runs in test_scheduler.py
and test_lanes.py, parametrised.)

Workers here are RedisSchedulers of their own names in this process; a lane that never takes work
stands for a worker that holds a job and goes silent. No waits on wall time: the reaper is called with
the visibility timeout it has, and a "silent" worker is one whose heartbeat never ran.
"""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import BaseModel, ConfigDict

from server.jobs import queue as queue_module
from server.jobs.artifacts import ArtifactStore
from server.jobs.cluster import queue as cluster_module
from server.jobs.cluster import workers as workers_module
from server.jobs.cluster.queue import RedisScheduler
from server.jobs.cluster.store import RedisJobStore, connect
from server.jobs.cluster.workers import LocalModels
from server.jobs.errors import QueueFull, QueueUnavailable
from server.jobs.job import Job
from server.jobs.lane import WorkerLane

HANG_GUARD_S = 10.0


class Work(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Gated(WorkerLane):
    """Runs each job until the test says how it ends: release(job_id, state)."""

    name = "work"
    kinds = {"work": Work}

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.started = threading.Event()
        self.running_job: Job | None = None
        self._outcome: dict[str, str] = {}
        self._cond = threading.Condition()

    def release(self, job_id: str, state: str = "succeeded") -> None:
        with self._cond:
            self._outcome[job_id] = state
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._outcome["*"] = "stop"
            self._cond.notify_all()
        super().stop()

    def run(self, job: Job) -> None:
        self.running_job = job
        self.started.set()
        with self._cond:  # a cancel is an event, not a notify: look at it often
            for _ in range(int(HANG_GUARD_S / 0.01)):
                if job.id in self._outcome or "*" in self._outcome or job.cancel_requested.is_set():
                    break
                self._cond.wait(0.01)
            outcome = self._outcome.get(job.id)
        if job.cancel_requested.is_set():
            job.finish("cancelled")
        elif outcome is not None:
            job.progress = 0.5
            job.finish(outcome)


class Placed(Gated):
    """A lane whose jobs load their model (as decode and codec do): placed by the workers' models."""

    loads_models = True


@pytest.fixture
def workers(redis_url, tmp_path):
    """make(name, lanes=True) -> (queue, lane); each stopped at the end."""
    made: list[RedisScheduler] = []

    def make(
        name: str,
        with_lane: bool = True,
        start: bool = True,
        visibility_s: float = 30.0,
        models: LocalModels | None = None,
    ):
        lane = Gated() if models is None else Placed()
        queue = RedisScheduler(
            [lane] if with_lane else [],
            RedisJobStore(connect(redis_url)),
            ArtifactStore(tmp_path / "artifacts"),
            queue_depth=10,
            retention_s=3600,
            kinds={"work": {"work": Work}},
            visibility_s=visibility_s,
            consumer=name,
            models=models,
        )
        made.append(queue)
        if start:
            queue.start()
        return queue, lane

    yield make
    for queue in made:
        queue.stop(timeout_s=0)
        queue.store.close()


def work(text: str = "x", seed: int = 7) -> Job:
    return Job(kind="work", model="m", request=Work(text=text), seed=seed)


def ended(job: Job) -> Job:
    done = threading.Event()
    job.on_done(done.set)
    assert done.wait(HANG_GUARD_S), f"job {job.id} ({job.state}) did not end"
    return job


def test_an_api_node_without_lanes_submits_and_a_worker_runs_it(workers):
    api, _ = workers("api", with_lane=False)
    worker, lane = workers("w1")
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    assert api.get(job.id).state == "running" and api.counts() == (0, 1)
    lane.release(job.id)
    ended(job)  # the API's own object ends when the record does (its sync thread reads it)
    assert job.state == "succeeded" and job.progress == 1.0
    assert api.list()[1] == 1 and worker.stats()["finished"] == 1


def test_a_silent_workers_job_is_claimed_by_another_and_runs_again_with_its_seed(workers):
    api, _ = workers("api", with_lane=False)
    dead, dead_lane = workers("dead", visibility_s=30.0)
    job = api.submit(work(seed=1234))
    assert dead_lane.started.wait(HANG_GUARD_S)
    first_attempt = dead_lane.running_job
    dead._halt.set()  # its heartbeats stop, as when the process is killed
    dead._syncer.join(HANG_GUARD_S)

    alive, alive_lane = workers("alive")
    reaper, _ = workers("reaper", with_lane=False, visibility_s=0.001)  # for it, any entry idle 1 ms is silent
    assert reaper.reap() == 1
    assert alive_lane.started.wait(HANG_GUARD_S)
    second = alive_lane.running_job
    assert (second.id, second.seed, second.attempts) == (job.id, 1234, 2)
    assert api.get(job.id).state == "running"

    # The presumed-dead worker wakes and finishes first: its finish is refused (fenced by attempt).
    dead_lane.release(job.id, "failed")
    ended(first_attempt)
    assert api.store.get(job.id)["state"] == "running"
    assert alive.stats().get("dropped") == 1

    alive_lane.release(job.id)
    ended(job)
    row = api.store.get(job.id)
    assert (row["state"], row["attempts"], row["seed"]) == ("succeeded", 2, 1234)
    assert alive.stats()["finished"] == 1 and alive.stats()["reclaimed"] == 1
    assert reaper.reap() == 0
    assert api.redis.xlen(api.keys.run("work")) == 0  # every attempt's entry acknowledged and gone


def test_a_heartbeating_worker_keeps_its_job(workers):
    api, _ = workers("api", with_lane=False)
    busy, lane = workers("busy")
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    busy._heartbeat()  # what its sync thread does every TICK_S
    other, _ = workers("other", visibility_s=60.0)
    assert other.reap() == 0
    lane.release(job.id)
    assert ended(job).state == "succeeded"


def test_a_cancel_reaches_the_worker_that_runs_the_job(workers):
    api, _ = workers("api", with_lane=False)
    worker, lane = workers("w1")
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    api.cancel(job.id)  # another process: the flag is in the record; the worker reads it at its heartbeat
    assert ended(job).state == "cancelled"
    assert api.store.get(job.id)["state"] == "cancelled"


def test_a_job_cancelled_while_its_worker_was_silent_ends_cancelled(workers):
    api, _ = workers("api", with_lane=False)
    dead, dead_lane = workers("dead")
    job = api.submit(work())
    assert dead_lane.started.wait(HANG_GUARD_S)
    dead._halt.set()
    dead._syncer.join(HANG_GUARD_S)
    api.cancel(job.id)
    _, lane = workers("alive")
    reaper, _ = workers("reaper", with_lane=False, visibility_s=0.001)
    assert reaper.reap() == 1
    assert ended(job).state == "cancelled" and not lane.started.is_set()


def test_progress_is_in_the_record_for_other_nodes(workers):
    api, _ = workers("api", with_lane=False)
    worker, lane = workers("w1")
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    lane.running_job.progress, lane.running_job.eta_s = 0.25, 3.5
    worker._heartbeat()
    seen = api.get(job.id)
    assert (seen.progress, seen.eta_s) == (0.25, 3.5)
    lane.release(job.id)
    ended(job)


def test_a_download_is_joined_across_nodes(workers):
    """submit_unless_running is one decision in Redis: two API nodes, one job."""
    one, _ = workers("api-1", with_lane=False)
    two, _ = workers("api-2", with_lane=False)
    first = one.submit_unless_running(work("m"))
    again = two.submit_unless_running(work("m"))
    assert again.id == first.id and two.counts() == (1, 0)


class FrozenWall:
    """Wall time stands still (a claim stamps a job's start with it, the estimate reads it); the
    monotonic clock is real."""

    wall = 2_000_000_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return time.monotonic()


def test_an_api_nodes_retry_after_counts_the_workers_and_what_they_measured(workers, monkeypatch):
    for module in (queue_module, cluster_module):
        monkeypatch.setattr(module, "time", FrozenWall())
    api, _ = workers("api", with_lane=False)
    one, lane_1 = workers("w1")
    two, lane_2 = workers("w2")
    one._heartbeat(), two._heartbeat()  # both alive, whatever their sync threads have done yet
    one.throughput.add("work", 4.0, 1.0)  # a worker measured 4 s per job: every node reads it
    assert api.throughput.seconds_per_unit("work") == 4.0
    first, second = api.submit_many([work("a"), work("b")])
    assert lane_1.started.wait(HANG_GUARD_S) and lane_2.started.wait(HANG_GUARD_S)
    api.submit_many([work(str(i)) for i in range(10)])  # the queue (10) is full
    with pytest.raises(QueueFull) as err:
        api.submit_many([work() for _ in range(3)])
    # A slot frees on each worker at 4 s, then every 4 s: the 3rd queued job starts at 8 s (12 on one).
    assert err.value.retry_after_s == 8 and err.value.headers["Retry-After"] == "8"
    held = lane_1.running_job.id
    lane_1.release(held)
    ended(first if held == first.id else second)
    assert len(api.throughput.samples("work")) == 2  # the finish was measured, once


def test_a_stopping_worker_hands_its_job_back_at_once(workers):
    api, _ = workers("api", with_lane=False)
    leaving, lane = workers("leaving")
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    leaving.stop(timeout_s=0)  # the lane returns without finishing it
    assert api.store.get(job.id)["state"] == "queued"
    staying, lane2 = workers("staying")
    assert lane2.started.wait(HANG_GUARD_S)
    lane2.release(job.id)
    assert ended(job).state == "succeeded" and api.store.get(job.id)["attempts"] == 2


def test_redis_out_of_reach_is_a_503_that_says_so(tmp_path):
    from server_process import free_port

    queue = RedisScheduler(
        [],
        RedisJobStore(connect(f"redis://127.0.0.1:{free_port()}/0")),  # nothing listens there
        ArtifactStore(tmp_path / "artifacts"),
        queue_depth=10,
        retention_s=3600,
        kinds={"work": {"work": Work}},
    )
    queue.start()  # starts all the same: it answers 503 until Redis is back
    try:
        for call in (lambda: queue.submit(work()), lambda: queue.get("x"), queue.counts, queue.list):
            with pytest.raises(QueueUnavailable) as err:
                call()
            assert err.value.status == 503 and "cannot be reached" in err.value.message
            assert err.value.headers["Retry-After"]
    finally:
        queue.stop(timeout_s=0)


# -- models per worker: reports and placement (server/jobs/cluster/workers.py) -----------------------


def models(installed=(), loaded=()) -> LocalModels:
    return LocalModels(
        device="cpu",
        loaded=lambda: list(loaded),
        installed=lambda: list(installed),
        is_installed=lambda name: name in installed,
    )


def test_each_worker_reports_its_models_and_slots_with_its_heartbeat(workers):
    api, _ = workers("api", with_lane=False)
    worker, lane = workers("w1", models=models(installed=["m", "n"], loaded=["m"]))
    job = api.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    worker._heartbeat()
    (info,) = api.workers(max_age_s=0)  # the API node holds no lane: it does not report itself
    assert (info.name, info.device, info.loaded, info.installed) == ("w1", "cpu", ["m"], ["m", "n"])
    assert info.lanes["work"].model_dump() == {"capacity": 1, "busy": 1, "models": ["m"]}
    assert info.heartbeat_age_s >= 0 and info.pid > 0
    lane.release(job.id)
    ended(job)


def test_a_job_goes_to_the_worker_whose_cache_has_its_model(workers):
    api, _ = workers("api", with_lane=False)
    bare, bare_lane = workers("bare", models=models(), start=False)
    has, has_lane = workers("has", models=models(installed=["m"]), start=False)
    bare._heartbeat(), has._heartbeat()  # each knows the other before either looks at the queue
    jobs = api.submit_many([work("a"), work("b")])
    bare.start(), has.start()
    for job in jobs:
        assert has_lane.started.wait(HANG_GUARD_S)
        has_lane.started.clear()
        has_lane.release(has_lane.running_job.id)
        assert ended(job).state == "succeeded"
    assert bare_lane.running_job is None  # it left both to the worker that has the model


def test_a_job_for_a_model_no_worker_has_fails_and_says_so_instead_of_waiting(workers, monkeypatch):
    monkeypatch.setattr(workers_module, "FAIL_AFTER_S", 0.0)
    api, _ = workers("api", with_lane=False)
    one, lane_1 = workers("w1", models=models(installed=["other"]), start=False)
    two, lane_2 = workers("w2", models=models(), start=False)
    one._heartbeat(), two._heartbeat()
    job = api.submit(work())
    one.start(), two.start()
    ended(job)  # once each worker has looked at its cache since the job came, one fails it
    assert job.state == "failed" and job.error.status == 409 and job.error.code == "model_not_installed"
    assert "no worker has model m installed (2 workers: w1, w2)" in job.error.message
    assert lane_1.running_job is None and lane_2.running_job is None


def test_a_worker_with_the_model_loaded_gets_its_job_before_one_that_would_load_it(workers, monkeypatch):
    monkeypatch.setattr(workers_module, "AFFINITY_S", 3600.0)  # no wall-clock race in the test
    api, _ = workers("api", with_lane=False)
    cold, cold_lane = workers("cold", models=models(installed=["m"]), start=False)
    warm, warm_lane = workers("warm", models=models(installed=["m"], loaded=["m"]), start=False)
    cold._heartbeat(), warm._heartbeat()
    job = api.submit(work())
    cold.start(), warm.start()
    assert warm_lane.started.wait(HANG_GUARD_S) and warm_lane.running_job.id == job.id
    warm_lane.release(job.id)
    assert ended(job).state == "succeeded" and cold_lane.running_job is None


def test_a_refresh_while_a_job_is_submitted_keeps_its_object(workers, monkeypatch):
    """The sync thread may refresh between the moment a submitted job is known here and the moment
    its record exists; the refresh must not take the missing record for a deleted job (the job
    would run on another object, and the submitter's wait would never end)."""
    api, _ = workers("api", with_lane=False, start=False)
    worker, lane = workers("w1")
    submit = api._scripts["SUBMIT"]

    def refresh_first(*args, **kwargs):
        api._refresh()  # what the sync thread may do at this moment
        return submit(*args, **kwargs)

    monkeypatch.setitem(api._scripts, "SUBMIT", refresh_first)
    api.start()
    job = api.submit(work())
    assert api.get(job.id) is job
    assert lane.started.wait(HANG_GUARD_S)
    lane.release(job.id)
    assert ended(job).state == "succeeded"


def test_a_finish_sent_by_two_threads_at_once_is_written_once(workers, monkeypatch):
    """The ending thread and the sync thread's retry may both send one finish: one of them writes
    it, and none is counted as a late (dropped) finish."""
    worker, lane = workers("w1")
    sent, inside = [], threading.Event()
    send = worker._send_finish

    def slow_send(held):
        sent.append(held.job.id)
        inside.set()
        worker._flush_finishes()  # the sync thread's retry, while this finish is on its way
        send(held)

    monkeypatch.setattr(worker, "_send_finish", slow_send)
    job = worker.submit(work())
    assert lane.started.wait(HANG_GUARD_S)
    lane.release(job.id)
    assert ended(job).state == "succeeded" and inside.is_set()
    assert sent == [job.id]
    stats = worker.stats()
    assert stats["finished"] == 1 and stats.get("dropped", 0) == 0
