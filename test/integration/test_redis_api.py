"""The API on the Redis queue, in one process (`--role all` with AUDIOCRAFT_QUEUE_URL), on tiny
models: the same answers as on SQLite. Synchronous generation, a batch submission, the listing and
its filter, progress events, cancel, and an encode job."""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf
from api_client import make_client, wait_job


@pytest.fixture
def client(tiny_hub, tmp_path, redis_url):
    with make_client(tiny_hub, tmp_path, queue_url=redis_url, max_batch=2) as c:
        yield c


def test_generation_listing_and_events_on_redis(client):
    r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 1, "seed": 3})
    assert r.status_code == 200, r.text
    assert sf.info(io.BytesIO(r.content)).duration == 1.0 and r.headers["X-Seed"] == "3"

    ids = client.post("/api/jobs", json=[{"kind": "music", "prompt": f"b{i}", "duration": 1} for i in range(2)]).json()[
        "ids"
    ]
    for job_id in ids:
        assert wait_job(client, job_id)["state"] == "succeeded"
    listed = client.get("/api/jobs", params={"state": "succeeded"}).json()
    assert listed["total"] == 3 and set(ids) <= {j["id"] for j in listed["jobs"]}
    with client.stream("GET", f"/api/jobs/{ids[0]}/events") as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert lines[-1] == "event: done"
    assert client.get(f"/api/jobs/{ids[1]}/audio").status_code == 200
    assert client.get("/api/jobs/nope").status_code == 404


def test_cancel_on_redis(tiny_hub, tmp_path, redis_url):
    """(The 429 of a full queue, on both backends: test_api.py test_queue_full_is_429_with_retry_after.)"""
    with make_client(tiny_hub, tmp_path, queue_url=redis_url, max_batch=1) as c:
        body = {"prompt": "long", "duration": 20, "async": True}
        jobs = [c.post("/api/generate/music", json=body).json()["job"]["id"] for _ in range(2)]
        for job_id in jobs:  # one running, one queued
            assert c.delete(f"/api/jobs/{job_id}").status_code == 200
        for job_id in jobs:
            assert wait_job(c, job_id)["state"] == "cancelled"
        assert c.get(f"/api/jobs/{jobs[0]}/audio").status_code == 409
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["queue"] == {"queued": 0, "running": 0, "capacity": 64}


def test_an_encode_job_on_redis(client):
    buf = io.BytesIO()
    sf.write(buf, [[0.1, -0.1]] * 24000, 24000, format="WAV")
    r = client.post("/api/encode", files={"file": ("a.wav", buf.getvalue(), "audio/wav")}, data={"format": "json"})
    assert r.status_code == 200, r.text
    answer = json.loads(r.content)
    assert answer["audio_length"] == 24000 and answer["segments"]
