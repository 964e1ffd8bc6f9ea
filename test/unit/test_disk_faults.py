"""A full disk with a fake one: every path where the job store or a lane meets it, one by one, and
the files the data dir is made of (private to their owner). No torch, no sleeps.

The fake full disk makes the store's writes raise what SQLite raises on a full disk (SQLITE_FULL,
"database or disk is full"), or the job store's own 507 where the scheduler is tested. The real
thing, a small tmpfs, is in test/integration/test_full_disk.py.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading

import pytest
from test_scheduler import FakeRunners, make_job, wait_done, wait_until

from lib.errors import InsufficientStorage, Internal, ServiceError
from lib.files import DATA_DIR, TEMP_DIR, disk_full, no_space, private_dir, space_errors
from server.jobs import lane as lane_module
from server.jobs import queue as queue_module
from server.jobs.artifacts import ArtifactStore
from server.jobs.errors import LowDiskSpace
from server.jobs.job import Job
from server.jobs.lanes import decode as decode_module
from server.jobs.lanes.decode import DecodeLane
from server.jobs.scheduler import Scheduler
from server.jobs.store import JobStore


def sqlite_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # as sqlite3 sets it on the real one
    return exc


# ----------------------------------------------------------------------------------- what a full disk is
@pytest.mark.parametrize(
    "exc,full",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (sqlite_full(), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (sqlite3.OperationalError("database is locked"), False),
        (ValueError("no"), False),
    ],
)
def test_a_full_disk_is_told_apart_from_other_failures(exc, full):
    assert disk_full(exc) is full


def test_a_full_disk_becomes_a_507_that_names_the_dir_not_its_path():
    with pytest.raises(InsufficientStorage) as err, space_errors(DATA_DIR):
        raise OSError(errno.ENOSPC, "No space left on device", "/secret/host/path/data/x")
    assert err.value.status == 507 and err.value.code == "disk_full"
    assert "AUDIOCRAFT_DATA_DIR" in err.value.message and "/secret" not in str(err.value.body())
    with pytest.raises(PermissionError), space_errors(DATA_DIR):  # anything else passes untouched
        raise PermissionError(errno.EACCES, "Permission denied")


# ----------------------------------------------------------------------------------- the job store
class FullDisk:
    """Stands in for the store's SQLite connection: while `full`, writes fail as on a full disk, and a
    failed COMMIT rolls back by itself (as SQLite does), so no transaction is left to roll back."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "COMMIT")

    def __init__(self, db: sqlite3.Connection):
        self._db, self.full = db, False

    def execute(self, sql: str, *args):
        if self.full and sql.lstrip().upper().startswith(self.WRITES):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise sqlite_full()
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        return self._db.executemany(sql, *args)  # inside BEGIN: the COMMIT is what fails

    def __getattr__(self, name: str):
        return getattr(self._db, name)


@pytest.fixture
def full_store(tmp_path):
    store = JobStore(tmp_path / "data" / "jobs.sqlite3")
    disk = FullDisk(store._db)
    store._db = disk  # type: ignore[assignment]
    yield store, disk
    store.close()


def test_a_submission_on_a_full_disk_is_507_and_leaves_the_store_as_it_was(full_store):
    store, disk = full_store
    disk.full = True
    job = make_job()
    with pytest.raises(InsufficientStorage) as err:
        store.insert_many([job.row()])  # once: COMMIT failed, then ROLLBACK raised "no transaction is active"
    assert err.value.code == "disk_full" and err.value.status == 507
    assert store.get(job.id) is None
    with pytest.raises(InsufficientStorage):
        store.update(job.id, state="running")
    disk.full = False  # space returns: the same store goes on
    store.insert_many([job.row()])
    store.update(job.id, state="running")
    assert store.get(job.id)["state"] == "running"


def test_the_data_dir_is_0700_and_the_job_store_files_0600(tmp_path):
    data = tmp_path / "data"
    store = JobStore(data / "jobs.sqlite3")
    store.insert_many([make_job().row()])  # the WAL and its index exist once something is written
    try:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
        assert modes == {"jobs.sqlite3": 0o600, "jobs.sqlite3-wal": 0o600, "jobs.sqlite3-shm": 0o600}
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        store.close()


def test_a_store_made_readable_by_an_older_version_is_narrowed(tmp_path):
    data = tmp_path / "data"
    JobStore(data / "jobs.sqlite3").close()
    os.chmod(data, 0o755)
    for p in data.iterdir():
        os.chmod(p, 0o644)
    JobStore(data / "jobs.sqlite3").close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()} == {0o600}


def test_artifacts_are_private_and_a_full_disk_leaves_no_half_file(tmp_path, monkeypatch):
    artifacts = ArtifactStore(tmp_path / "data" / "artifacts")
    path = artifacts.write("job1", "audio.wav", b"RIFF")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(artifacts.root.stat().st_mode) == 0o700

    def no_room(fd, _data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", lambda fd: no_room(fd, b""))
    with pytest.raises(InsufficientStorage):
        artifacts.write("job1", "master.wav", b"x" * 1000)
    assert sorted(p.name for p in (artifacts.root / "job1").iterdir()) == ["audio.wav"]


def test_private_dir_makes_missing_parents_and_leaves_others_dirs_alone(tmp_path):
    made = private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert (tmp_path / "a").is_dir()


# ----------------------------------------------------------------------------------- the queue
@pytest.fixture
def queue(tmp_path, monkeypatch):
    """(scheduler, runners, disk): a started queue whose store fails as a full disk while disk.full."""
    runners = FakeRunners()
    sched = Scheduler(
        [DecodeLane(runners, 4)],
        store=JobStore(tmp_path / "jobs.sqlite3"),
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        queue_depth=100,
        retention_s=3600.0,
    )

    class Disk:
        full: set[str] = set()  # the store's writes that fail: update, insert_many

    disk = Disk()
    for name in ("update", "insert_many"):
        real = getattr(sched.store, name)

        def failing(*args, _real=real, _name=name, **kw):
            if _name in disk.full:
                raise no_space(DATA_DIR)
            return _real(*args, **kw)

        monkeypatch.setattr(sched.store, name, failing)
    sched.start()
    yield sched, runners, disk
    disk.full = set()
    runners.run_freely()
    sched.stop(timeout_s=0)
    sched.store.close()


def test_a_job_whose_start_cannot_be_stored_fails_with_507_and_the_lane_goes_on(queue):
    sched, runners, disk = queue
    disk.full = {"update"}  # the row goes in; marking it running does not
    blocked = sched.submit(make_job())
    wait_done(blocked)  # the lane took it, could not store 'running': it failed, it did not kill the lane
    assert blocked.state == "failed" and blocked.error.status == 507 and blocked.error.code == "disk_full"
    assert sched.alive
    assert sched.get(blocked.id).state == "failed"  # answered from memory...
    assert sched.store.get(blocked.id)["state"] == "queued"  # ...while the store cannot say it yet
    disk.full = {"update", "insert_many"}
    with pytest.raises(InsufficientStorage):
        sched.submit(make_job())  # a submission on the full disk: 507, not 500
    assert sched.counts() == (0, 0)

    disk.full = set()  # space returns: no restart
    after = sched.submit(make_job())
    runners.step(1)
    wait_done(after)
    assert after.state == "succeeded"
    assert sched.store.get(blocked.id)["state"] == "failed"  # stored once the store took writes again
    assert runners.admitted == [after.id]


def test_a_job_whose_end_cannot_be_stored_still_ends_and_is_stored_later(queue):
    sched, runners, disk = queue
    job = sched.submit(make_job(steps=2))
    runners.step(1)
    disk.full = {"update"}
    woke = threading.Event()
    job.on_done(woke.set)  # as a synchronous request waits
    runners.step(1)
    assert woke.wait(10) and job.state == "succeeded"
    assert sched.get(job.id).state == "succeeded" and sched.list()[0][0].state == "succeeded"
    assert sched.store.get(job.id)["state"] == "running"
    assert sched.busy_models() == set()  # ended: it holds no model
    disk.full = set()
    sched.clean_up()  # the housekeeping's hourly pass, or any submission or end, stores it
    assert sched.store.get(job.id)["state"] == "succeeded"


def test_a_lane_outlives_a_store_that_fails_in_any_way(queue, monkeypatch):
    sched, runners, _disk = queue
    monkeypatch.setattr(decode_module, "RETRY_S", 0.01)
    calls = {"n": 0}
    real_ready = sched._ready

    def broken_ready(lane):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_ready(lane)

    monkeypatch.setattr(sched, "_ready", broken_ready)
    job = sched.submit(make_job())
    wait_until(lambda: calls["n"] > 2, "the lane trying again")
    runners.step(1)
    wait_done(job)
    assert job.state == "succeeded" and sched.alive


def test_below_the_floor_submissions_are_507_until_there_is_room(tmp_path, monkeypatch, backend):
    """The floor is the shared queue's (server/jobs/queue.py): both backends refuse alike."""
    sched = backend.queue(
        [DecodeLane(FakeRunners(), 4)],
        store=backend.store(),
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        queue_depth=10,
        retention_s=3600.0,
        min_free_bytes=100_000_000,
    )
    free = {"bytes": 5_000_000}
    monkeypatch.setattr(queue_module.shutil, "disk_usage", lambda _p: type("U", (), {"free": free["bytes"]})())
    with pytest.raises(LowDiskSpace) as err:
        sched.submit(make_job())
    assert err.value.status == 507 and "5.0 MB free" in err.value.message and "100 MB floor" in err.value.message
    assert "AUDIOCRAFT_MIN_FREE_DISK_MB" in err.value.hint and str(tmp_path) not in str(err.value.body())
    assert sched.counts() == (0, 0)
    free["bytes"] = 200_000_000
    sched.submit(make_job())
    assert sched.counts() == (1, 0)
    sched.store.close()


def test_the_floor_names_the_artifacts_dir_when_it_is_its_own(tmp_path, monkeypatch):
    """AUDIOCRAFT_ARTIFACTS_DIR (a shared volume) is what fills, and what the message names."""
    from lib.files import ARTIFACTS_DIR
    from lib.settings import Settings
    from server.main import build_queue

    settings = Settings(data_dir=tmp_path / "data", artifacts_dir=tmp_path / "shared", min_free_disk_mb=100)
    queue = build_queue(settings, [], ArtifactStore.of(settings))
    monkeypatch.setattr(queue_module.shutil, "disk_usage", lambda _p: type("U", (), {"free": 1})())
    with pytest.raises(LowDiskSpace) as err:
        queue.check_space()
    assert ARTIFACTS_DIR in err.value.message and "data dir" not in err.value.message
    queue.store.close()


# ----------------------------------------------------------------------------------- lanes and jobs
def test_what_a_job_that_raised_fails_with():
    job = make_job()
    service = InsufficientStorage("x")
    assert lane_module.failure(job, service) is service
    full = lane_module.failure(job, OSError(errno.ENOSPC, "No space left on device", "/tmp/audiocraft-codec-1.wav"))
    assert full.status == 507 and TEMP_DIR in full.message and "/tmp" not in full.message.replace("(TMPDIR)", "")
    bug = lane_module.failure(job, KeyError("/home/someone/secret"))
    assert isinstance(bug, Internal) and "secret" not in bug.message


def test_one_failing_callback_at_a_jobs_end_does_not_keep_the_others_from_running():
    job = Job(kind="music", model="m", request=make_job().request, seed=1)
    seen = []

    def broken() -> None:
        raise ServiceError("the store is full")

    job.on_done(broken)
    job.on_done(lambda: seen.append("woke"))
    job.finish("failed", InsufficientStorage("full"))
    assert seen == ["woke"] and job.state == "failed"
