"""Jobs against the real server process: crash recovery, graceful stop, batching, cancellation,
priorities, progress events and the queue limit."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
import soundfile as sf
from server_process import ServerProcess
from waiting import HANG_GUARD_S, STALL_S, get_json, job_signature, running_signature, wait_for_progress, wait_jobs

pytestmark = pytest.mark.e2e

EXACT = {"sample_rate": "native", "bit_depth": 32, "normalize": "none"}


def wait_all(client, ids, states=("succeeded",)):
    """Wait, while they get on, until the jobs end; then they ended in `states` (one for all, or one each)."""
    jobs = wait_jobs(client, ids)
    assert [j["state"] for j in jobs] == [s for s in states for _ in ([0] if len(states) > 1 else ids)], jobs
    return jobs


def wait_running(client, job_id, min_progress=0.0):
    """Wait, while the server gets on, until the job runs with progress past `min_progress`."""

    def probe():
        job = get_json(client, f"/api/jobs/{job_id}")
        assert job["state"] in ("queued", "running"), job
        done = job["state"] == "running" and job["progress"] > min_progress
        return (job if done else None), (job_signature(job), running_signature(client))

    return wait_for_progress(probe, f"job {job_id} to run past progress {min_progress}")


def fresh_audio(client, kind, body):
    """The audio a fresh run of `body` makes: submitted async and followed while it gets on (a
    synchronous request could only wait on a wall clock)."""
    r = client.post(f"/api/generate/{kind}", json={**body, "async": True})
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    wait_all(client, [job_id])
    return client.get(f"/api/jobs/{job_id}/audio").content


def stored_states(data_dir):
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())


def test_sigkill_then_restart_completes_every_job_once(tiny_hub, tmp_path):
    server = ServerProcess(tiny_hub, tmp_path / "data", max_batch=1).start()
    with server.client() as c:
        body = [{"kind": "music", "prompt": f"crash {i}", "duration": 12, "seed": i, **EXACT} for i in range(3)]
        ids = c.post("/api/jobs", json=body).json()["ids"]
        wait_running(c, ids[0], min_progress=0.05)
    server.kill()
    states = stored_states(server.data_dir)
    assert states[ids[0]] == "running" and {states[i] for i in ids[1:]} == {"queued"}

    server.start()
    try:
        with server.client() as c:
            jobs = wait_all(c, ids)
            assert [j["id"] for j in c.get("/api/jobs", params={"limit": 100}).json()["jobs"]].count(ids[0]) == 1
            assert c.get("/api/jobs").json()["total"] == 3
            for job in jobs:
                audio = c.get(f"/api/jobs/{job['id']}/audio")
                assert sf.info(io.BytesIO(audio.content)).frames == 12 * 32000
            # The interrupted job ran again from its recorded seed: same audio as a fresh run.
            again = fresh_audio(c, "music", {"prompt": "crash 0", "duration": 12, "seed": 0, **EXACT})
            assert again == c.get(f"/api/jobs/{ids[0]}/audio").content
    finally:
        server.terminate()


def test_melody_and_continuation_jobs_keep_their_input_across_a_crash(tiny_hub, tmp_path):
    """The input audio is kept with the job: a long melody or continuation job killed mid-run runs
    again after a restart, window after window, to the audio a fresh run makes."""
    import base64

    import numpy as np

    t = np.arange(32000 * 2) / 32000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 294 * t)).astype(np.float32), 32000, format="WAV")
    audio = base64.b64encode(buf.getvalue()).decode()
    bodies = [
        {"kind": "melody", "melody": audio, "prompt": "strings", "duration": 40, "seed": 1, **EXACT},
        {"kind": "continuation", "audio": audio, "duration": 35, "seed": 2, "include_prompt": False, **EXACT},
    ]
    server = ServerProcess(tiny_hub, tmp_path / "data", max_batch=2).start()
    with server.client() as c:
        ids = c.post("/api/jobs", json=bodies).json()["ids"]
        wait_running(c, ids[0], min_progress=0.05)
    server.kill()
    server.start()
    try:
        with server.client() as c:
            jobs = wait_all(c, ids)
            assert [j["result"]["duration_s"] for j in jobs] == [40.0, 35.0]
            for job_id, body in zip(ids, bodies, strict=True):
                kind = body.pop("kind")
                assert fresh_audio(c, kind, body) == c.get(f"/api/jobs/{job_id}/audio").content
    finally:
        server.terminate()


def test_graceful_stop_requeues_what_it_cannot_finish(tiny_hub, tmp_path):
    server = ServerProcess(tiny_hub, tmp_path / "data", max_batch=1, stop_timeout_s=0.2).start()
    with server.client() as c:
        job_id = c.post("/api/generate/music", json={"prompt": "long", "duration": 30, "async": True}).json()["job"][
            "id"
        ]
        wait_running(c, job_id, min_progress=0.02)
    assert server.terminate() in (0, -15)
    assert stored_states(server.data_dir)[job_id] == "running"
    server.start()
    try:
        with server.client() as c:
            wait_all(c, [job_id])
    finally:
        server.terminate()


def test_graceful_stop_finishes_short_work(tiny_hub, tmp_path):
    server = ServerProcess(tiny_hub, tmp_path / "data", stop_timeout_s=HANG_GUARD_S).start()
    with server.client() as c:
        job_id = c.post("/api/generate/music", json={"prompt": "short", "duration": 8, "async": True}).json()["job"][
            "id"
        ]
        wait_running(c, job_id)
    assert server.terminate() in (0, -15)
    assert stored_states(server.data_dir)[job_id] == "succeeded"


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("jobs-data"), max_batch=4, queue_depth=6).start()
    yield proc
    proc.terminate()


def test_batched_output_is_identical_to_alone(server):
    mine = {"kind": "music", "prompt": "solo violin", "duration": 3, "seed": 77, "temperature": 1.0, **EXACT}
    with server.client() as c:
        alone = c.post("/api/generate/music", json={k: v for k, v in mine.items() if k != "kind"})
        assert alone.status_code == 200
        others = [
            {"kind": "music", "prompt": "a long prompt about a big brass band in a stadium", "duration": 5, "seed": 1},
            {"kind": "music", "prompt": "glitch", "duration": 1, "seed": 2, "top_p": 0.8},
            {"kind": "music", "prompt": "choir", "duration": 2, "seed": 3, "cfg_coef": 1.0},
        ]
        ids = c.post("/api/jobs", json=[others[0], mine, *others[1:]]).json()["ids"]
        jobs = wait_all(c, ids)
        assert len({j["started_at"] for j in jobs}) == 1  # they really shared one decode batch
        batched = c.get(f"/api/jobs/{ids[1]}/audio")
        assert batched.content == alone.content


def test_cancel_queued_and_running(server):
    with server.client() as c:
        body = [
            {"kind": "music", "prompt": "to cancel", "duration": 30, "model": m}
            for m in ("musicgen-large", "musicgen-medium")
        ]
        first, second = c.post("/api/jobs", json=body).json()["ids"]  # different models: two batches
        wait_running(c, first, min_progress=0.01)
        assert c.delete(f"/api/jobs/{second}").json()["state"] == "cancelled"
        c.delete(f"/api/jobs/{first}")
        ran, queued = wait_all(c, [first, second], states=("cancelled", "cancelled"))
        assert queued["started_at"] is None  # a queued job never runs
        assert ran["progress"] < 1.0  # a running one stopped early
        assert c.get(f"/api/jobs/{first}/audio").status_code == 409
        assert c.post("/api/generate/music", json={"prompt": "after", "duration": 1}).status_code == 200


def test_interactive_requests_go_before_bulk(server):
    with server.client() as c:
        bulk = c.post(
            "/api/jobs",
            json=[
                {"kind": "music", "prompt": f"bulk {i}", "duration": 4, "model": m}
                for i, m in enumerate(["musicgen-small", "musicgen-medium", "musicgen-large"])
            ],
        ).json()["ids"]
        wait_running(c, bulk[0])
        r = c.post(
            "/api/generate/music", json={"prompt": "now please", "duration": 1, "model": "musicgen-stereo-small"}
        )
        assert r.status_code == 200
        mine = c.get(f"/api/jobs/{r.headers['x-job-id']}").json()
        jobs = wait_all(c, bulk)
        assert mine["started_at"] < jobs[1]["started_at"] < jobs[2]["started_at"]


def test_progress_events_then_done(server):
    with server.client() as c:
        job_id = c.post("/api/generate/music", json={"prompt": "events", "duration": 10, "async": True}).json()["job"][
            "id"
        ]
        events = []
        # The read timeout is a stall limit: a running job sends its progress as it goes.
        with c.stream("GET", f"/api/jobs/{job_id}/events", timeout=STALL_S) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
        assert events[-1][0] == "done"
        assert events[-1][1]["state"] == "succeeded"
        progress = [e["progress"] for n, e in events if n == "progress"]
        assert progress == sorted(progress) and len(progress) >= 2
        assert c.get("/api/jobs/nope/events").status_code == 404


def test_audio_converted_on_request(server):
    with server.client() as c:
        r = c.post("/api/generate/music", json={"prompt": "convert", "duration": 2})
        job_id = r.headers["x-job-id"]
        flac = c.get(f"/api/jobs/{job_id}/audio", params={"format": "flac", "sample_rate": "native"})
        assert flac.headers["content-type"] == "audio/flac"
        info = sf.info(io.BytesIO(flac.content))
        assert (info.samplerate, info.frames) == (32000, 64000)
        assert c.get(f"/api/jobs/{job_id}/audio", params={"format": "aiff"}).status_code == 422


def test_past_the_queue_depth_is_429_and_all_or_nothing(server):
    def batch(n: int, what: str) -> list[dict]:
        return [{"kind": "music", "prompt": f"{what} {i}", "duration": 1} for i in range(n)]

    with server.client() as c:
        before = c.get("/api/jobs").json()["total"]
        r = c.post("/api/jobs", json=batch(7, "flood"))  # more than the whole queue (6): never, so no Retry-After
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_jobs", r.text
        assert c.get("/api/jobs").json()["total"] == before
        held = c.post("/api/jobs", json=batch(6, "hold")).json()["ids"]  # at most 4 run: 2 or more wait
        r = c.post("/api/jobs", json=batch(5, "flood"))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/api/jobs").json()["total"] == before + 6
        for job_id in held:
            c.delete(f"/api/jobs/{job_id}")
        wait_jobs(c, held)
        bad = c.post("/api/jobs", json=[{"prompt": "ok"}, {"prompt": ""}])
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "[1].prompt"
        assert c.get("/health").json()["status"] == "ok"


def test_a_new_request_joins_the_running_batch_and_leaves_first(server):
    short = {"prompt": "joins late", "duration": 1, "seed": 9, **EXACT}
    with server.client() as c:
        alone = c.post("/api/generate/music", json=short)
        long_id = c.post("/api/generate/music", json={"prompt": "long runner", "duration": 20, "async": True}).json()[
            "job"
        ]["id"]
        wait_running(c, long_id, min_progress=0.1)
        joined = c.post("/api/generate/music", json=short)
        assert joined.status_code == 200
        short_job = c.get(f"/api/jobs/{joined.headers['x-job-id']}").json()
        long_job = c.get(f"/api/jobs/{long_id}").json()
        # It started while the long job ran, finished before it, and gave what it gives alone.
        assert long_job["state"] == "running"
        assert short_job["started_at"] > long_job["started_at"]
        assert joined.content == alone.content
        wait_all(c, [long_id])
