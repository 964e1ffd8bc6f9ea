"""MAGNeT through the HTTP API on its tiny checkpoints: text to music (magnet-*) and text to sound
(audio-magnet-*), sync and async, progress events, jobs submitted together decoded in one batch with
the tokens each gets alone, and the 422s of what MAGNeT does not take."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client, wait_job

from server import metrics

QUICK = {"decoding_steps": [3, 2, 2, 1]}  # audiocraft's schedule, fewer iterations: a quick test


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("magnet-api")) as c:
        yield c


def read_audio(resp):
    return sf.read(io.BytesIO(resp.content), always_2d=True, dtype="float32")


def test_music_from_magnet_sync(client):
    body = {"prompt": "calm piano", "model": "magnet-small-10secs", "duration": 1, "sample_rate": "native", "seed": 4}
    r = client.post("/api/generate/music", json=body | QUICK)
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == "magnet-small-10secs" and r.headers["x-seed"] == "4"
    audio, rate = read_audio(r)
    assert rate == 32000 and audio.shape == (32000, 1) and np.abs(audio).max() > 0
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    # The stored request shows what ran: audiocraft's MAGNeT defaults where the request said nothing.
    request = job["request"]
    assert (request["temperature"], request["top_p"], request["top_k"]) == (3.0, 0.9, 0)
    assert (request["max_cfg_coef"], request["min_cfg_coef"], request["span_arrangement"]) == (10.0, 1.0, "nonoverlap")
    assert request["decoding_steps"] == [3, 2, 2, 1]
    again = client.post("/api/generate/music", json=body | QUICK)
    assert again.content == r.content  # the seed decides


def test_the_whole_segment_is_whole_spans(client):
    """10 s of a 10 s model: audiocraft's MAGNeT makes 498 frames (166 spans of 3), 9.96 s."""
    body = {"prompt": "rain", "model": "magnet-small-10secs", "sample_rate": "native", "decoding_steps": [1, 1, 1, 1]}
    r = client.post("/api/generate/music", json=body)
    assert r.status_code == 200, r.text
    assert sf.info(io.BytesIO(r.content)).frames == 498 * 640
    assert float(r.headers["x-duration-s"]) == pytest.approx(9.96)


def test_sound_from_audio_magnet_async_with_progress_events(client):
    body = {
        "prompt": "dog barking",
        "model": "audio-magnet-small",
        "duration": 1.5,
        "async": True,
        "sample_rate": "native",
    }
    r = client.post("/api/generate/sound", json=body | QUICK)
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    assert events[-1][0] == "done" and events[-1][1]["state"] == "succeeded"
    progress = [e["progress"] for n, e in events if n == "progress"]
    assert progress == sorted(progress)
    job = wait_job(client, job_id)
    assert (job["kind"], job["model"], job["result"]["duration_s"]) == ("sound", "audio-magnet-small", 1.5)
    audio, rate = read_audio(client.get(f"/api/jobs/{job_id}/audio"))
    assert rate == 16000 and audio.shape == (24000, 1)


def test_jobs_submitted_together_decode_in_one_batch_with_their_own_tokens(client):
    item = {"kind": "music", "model": "magnet-small-10secs", "duration": 1, "sample_rate": "native"} | QUICK
    items = [item | {"prompt": f"song {i}", "seed": 10 + i} for i in range(3)]
    sizes = metrics.BATCH_SIZE.collect()[0].samples
    before = {s.name: s.value for s in sizes if s.name.endswith(("_sum", "_count"))}
    r = client.post("/api/jobs", json=items)
    assert r.status_code == 202, r.text
    jobs = [wait_job(client, job_id) for job_id in r.json()["ids"]]
    assert all(j["state"] == "succeeded" for j in jobs)
    after = {s.name: s.value for s in metrics.BATCH_SIZE.collect()[0].samples if s.name in before}
    admitted = after["audiocraft_batch_size_sum"] - before["audiocraft_batch_size_sum"]
    rounds = after["audiocraft_batch_size_count"] - before["audiocraft_batch_size_count"]
    assert admitted / rounds > 1  # they shared a batch
    alone = client.post("/api/generate/music", json={k: v for k, v in items[1].items() if k != "kind"})
    batched = client.get(f"/api/jobs/{jobs[1]['id']}/audio")
    assert np.array_equal(read_audio(alone)[0], read_audio(batched)[0])


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/api/generate/music", {"model": "magnet-small-10secs", "cfg_coef": 3.0}, "cfg_coef"),
        ("/api/generate/music", {"model": "magnet-small-10secs", "duration": 12}, "duration"),
        ("/api/generate/music", {"model": "magnet-small-10secs", "decoding_steps": [4, 4]}, "decoding_steps"),
        ("/api/generate/music", {"model": "magnet-small-10secs", "decoding_steps": [0, 1, 1, 1]}, "decoding_steps"),
        ("/api/generate/music", {"model": "musicgen-small", "max_cfg_coef": 5}, "max_cfg_coef"),
        ("/api/generate/sound", {"model": "magnet-small-10secs"}, "model"),
        ("/api/generate/music", {"model": "audio-magnet-small"}, "model"),
    ],
)
def test_what_magnet_refuses_is_a_422(client, path, body, field):
    r = client.post(path, json={"prompt": "x"} | body)
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()["error"])
