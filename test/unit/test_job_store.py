"""The durable job store (server/jobs/store.py, SQLite in WAL mode) and the artifact store
(server/jobs/artifacts.py) on their own: no scheduler, no worker thread."""

from __future__ import annotations

import itertools
import sqlite3
import time

import pytest

from lib.schemas import ErrorBody, JobResult, MusicRequest, SoundRequest
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.lanes.decode import DecodeLane
from server.jobs.store import JobStore

REQUEST_TYPES = DecodeLane.kinds

_created = itertools.count()
_BASE = time.time()


def make_job(state: str = "queued", priority: int = 10, finished_at: float | None = None, **fields) -> Job:
    """Jobs are created in call order, a millisecond apart: orderings never depend on the clock."""
    n = next(_created)
    job = Job(
        kind="music",
        model="musicgen-small",
        request=MusicRequest(prompt=f"test {n}", duration=4),
        seed=7000 + n,
        priority=priority,
        created_at=_BASE + n / 1000,
        **fields,
    )
    job.state, job.finished_at = state, finished_at
    return job


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def test_a_job_reads_back_as_it_was_stored(store):
    job = make_job(state="failed", finished_at=_BASE + 5, attempts=2, progress=0.25, eta_s=3.5)
    job.started_at = _BASE + 1
    job.error = ErrorBody(code="generation_failed", message="boom", hint="retry")
    store.insert(job.row())

    row = store.get(job.id)
    assert row == job.row()
    assert isinstance(row["error"], ErrorBody)
    back = Job.from_row(row, REQUEST_TYPES)
    assert back.view() == job.view()
    assert store.get("missing") is None


def test_a_sound_job_reads_back_with_its_own_request_type(store):
    job = Job(kind="sound", model="audiogen-medium", request=SoundRequest(prompt="rain", duration=2), seed=3)
    store.insert(job.row())
    back = Job.from_row(store.get(job.id), REQUEST_TYPES)
    assert isinstance(back.request, SoundRequest) and back.request == job.request


def test_insert_many_is_all_or_nothing(store):
    kept = make_job()
    store.insert(kept.row())

    fresh, twin_a, twin_b = make_job(), make_job(), make_job()
    twin_b.id = twin_a.id  # a duplicate inside the batch
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_many([fresh.row(), twin_a.row(), twin_b.row()])
    assert store.get(fresh.id) is None and store.get(twin_a.id) is None

    clash = make_job()
    clash.id = kept.id  # a duplicate of a stored job, last in the batch
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_many([fresh.row(), clash.row()])
    assert store.get(fresh.id) is None
    assert store.get(kept.id)["seed"] == kept.seed  # the stored one is untouched
    assert store.page(None, 50, 0)[1] == 1

    store.insert_many([fresh.row(), twin_a.row()])  # the store still takes good batches
    assert store.page(None, 50, 0)[1] == 3
    store.insert_many([])


def test_update_changes_only_the_fields_given(store):
    job = make_job()
    store.insert(job.row())
    result = JobResult(
        media_type="audio/wav", format="wav", sample_rate=44100, channels=1, duration_s=4.0, size_bytes=1234
    )
    store.update(job.id, state="succeeded", progress=1.0, finished_at=_BASE + 9, result=result)

    row = store.get(job.id)
    assert (row["state"], row["progress"], row["finished_at"], row["result"]) == ("succeeded", 1.0, _BASE + 9, result)
    assert (row["seed"], row["created_at"], row["attempts"], row["error"]) == (job.seed, job.created_at, 0, None)

    store.update(job.id, result=None, eta_s=None)
    assert store.get(job.id)["result"] is None
    store.update("missing", state="failed")  # no such row: nothing happens
    assert store.get("missing") is None


def test_page_is_newest_first_with_a_total_and_an_optional_state(store):
    jobs = [make_job(state="succeeded" if i % 2 else "queued") for i in range(5)]
    store.insert_many([j.row() for j in jobs])
    newest_first = [j.id for j in reversed(jobs)]

    rows, total = store.page(None, 2, 0)
    assert (ids(rows), total) == (newest_first[:2], 5)
    rows, total = store.page(None, 2, 4)
    assert (ids(rows), total) == (newest_first[4:], 5)
    rows, total = store.page("queued", 10, 0)
    assert (ids(rows), total) == ([jobs[4].id, jobs[2].id, jobs[0].id], 3)
    rows, total = store.page("failed", 10, 0)
    assert (rows, total) == ([], 0)


def test_unfinished_lists_queued_and_running_jobs_most_urgent_first(store):
    late_urgent = make_job(priority=0)  # created first, but see below
    bulk = make_job(state="running", priority=10)
    urgent = make_job(priority=0)
    done = [make_job(state=s, finished_at=_BASE) for s in ("succeeded", "failed", "cancelled")]
    late_urgent.created_at = _BASE + 100
    store.insert_many([j.row() for j in (bulk, *done, late_urgent, urgent)])
    assert ids(store.unfinished()) == [urgent.id, late_urgent.id, bulk.id]


def test_finished_before_and_delete(store):
    old = [make_job(state=s, finished_at=_BASE - 100) for s in ("succeeded", "failed", "cancelled")]
    at_cutoff = make_job(state="succeeded", finished_at=_BASE)
    recent = make_job(state="succeeded", finished_at=_BASE + 100)
    unfinished = make_job(state="running")
    store.insert_many([j.row() for j in (*old, at_cutoff, recent, unfinished)])

    found = store.finished_before(_BASE)
    assert sorted(found) == sorted(j.id for j in old)  # strictly before; never an unfinished job

    store.delete(found)
    store.delete([])
    store.delete(["missing"])
    rows, total = store.page(None, 50, 0)
    assert total == 3 and set(ids(rows)) == {at_cutoff.id, recent.id, unfinished.id}


def test_the_store_is_wal_and_survives_a_reopen(tmp_path):
    path = tmp_path / "nested" / "jobs.sqlite3"  # its folder is made
    first = JobStore(path)
    job = make_job()
    first.insert(job.row())
    # Another connection (another process after a crash) sees the commit without a close.
    second = JobStore(path)
    assert second.get(job.id)["seed"] == job.seed
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    first.close()
    second.close()
    third = JobStore(path)  # the schema is created only if missing
    assert ids(third.unfinished()) == [job.id]
    third.close()


def test_artifacts_are_written_read_and_removed_per_job(tmp_path):
    artifacts = ArtifactStore(tmp_path / "artifacts")
    path = artifacts.write("job1", "audio.wav", b"RIFF1")
    artifacts.write("job1", "audio.wav", b"RIFF2")  # replaced whole
    artifacts.write("job1", "master.wav", b"M")
    artifacts.write("job2", "audio.wav", b"other")

    assert path == artifacts.path("job1", "audio.wav") == tmp_path / "artifacts" / "job1" / "audio.wav"
    assert artifacts.read("job1", "audio.wav") == b"RIFF2"
    assert sorted(p.name for p in (tmp_path / "artifacts" / "job1").iterdir()) == ["audio.wav", "master.wav"]

    artifacts.remove("job1")
    assert not (tmp_path / "artifacts" / "job1").exists()
    assert artifacts.read("job2", "audio.wav") == b"other"
    artifacts.remove("job1")  # already gone: nothing to do
    artifacts.remove("never")
    with pytest.raises(FileNotFoundError):
        artifacts.read("job1", "audio.wav")
