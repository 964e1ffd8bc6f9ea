"""AudioSeal through the HTTP API (ASGI) on the tiny models: `watermark: true` on generations, the
AUDIOCRAFT_WATERMARK setting, and POST /api/watermark/detect, with the answers to bad input.

Random tiny weights detect nothing meaningful (test/conformance/test_audioseal.py checks the modules
against audioseal), so these check the plumbing exactly: a watermarked generation is the unmarked
one (same seed) plus the tiny generator's mark, and the verdict is the tiny detector's own.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
import torch
from api_client import make_client, wait_job

from lib.catalogue import get_spec
from server.engine import watermark
from server.hub import store
from server.models.audioseal import load_audioseal

RAW = {"sample_rate": "native", "normalize": "none", "format": "wav", "bit_depth": 32}


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("wm"), watermark_message=0xBEEF) as c:
        yield c


@pytest.fixture(scope="module")
def seal(tiny_hub):
    spec = get_spec("audioseal")
    return load_audioseal(spec, store.snapshot_dir(spec, tiny_hub), torch.device("cpu"), "float32")


def audio_of(resp) -> tuple[np.ndarray, int]:
    assert resp.status_code == 200, resp.text
    data, rate = sf.read(io.BytesIO(resp.content), dtype="float32", always_2d=True)
    return data.T, rate


def wav(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("music", {"prompt": "calm piano"}),
        ("sound", {"prompt": "rain"}),
        ("music", {"prompt": "calm piano", "model": "magnet-small-10secs"}),  # MAGNeT's own runner
    ],
)
def test_a_watermarked_generation_is_the_plain_one_plus_the_mark(client, seal, path, body):
    body = {**body, "duration": 1, "seed": 11, **RAW}
    plain, rate = audio_of(client.post(f"/api/generate/{path}", json=body))
    r = client.post(f"/api/generate/{path}", json={**body, "watermark": True})
    marked, marked_rate = audio_of(r)
    assert rate == marked_rate and marked.shape == plain.shape
    assert r.headers["x-watermark"] == "audioseal"
    np.testing.assert_allclose(marked, watermark.embed(seal.generator, plain, rate, 0xBEEF), atol=1e-6)
    assert not np.allclose(marked, plain, atol=1e-4)
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    assert job["request"]["watermark"] is True
    assert job["result"]["info"] == {"watermark": "audioseal", "watermark_message": str(0xBEEF)}
    plain_job = client.get("/api/jobs?limit=2").json()["jobs"][1]
    assert plain_job["request"]["watermark"] is False and "watermark" not in plain_job["result"]["info"]


def test_a_continuation_marks_its_whole_answer(client, seal):
    prompt = 0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 32000).astype(np.float32)[None]
    body = {"duration": "1", "seed": "5", "sample_rate": "native", "normalize": "none", "bit_depth": "32"}
    files = {"audio": ("p.wav", wav(prompt, 32000), "audio/wav")}
    plain, _ = audio_of(client.post("/api/generate/continuation", data=body, files=files))
    files = {"audio": ("p.wav", wav(prompt, 32000), "audio/wav")}
    marked, _ = audio_of(client.post("/api/generate/continuation", data={**body, "watermark": "true"}, files=files))
    np.testing.assert_allclose(marked, watermark.embed(seal.generator, plain, 32000, 0xBEEF), atol=1e-6)


def test_a_watermarked_stream_sends_what_it_keeps(client):
    body = {"prompt": "calm piano", "duration": 1.5, "seed": 3, "stream": True, "format": "pcm", "bit_depth": 32}
    body["sample_rate"] = "native"
    with client.stream("POST", "/api/generate/music", json={**body, "watermark": True}) as r:
        assert r.status_code == 200 and r.headers["x-watermark"] == "audioseal"
        streamed = np.frombuffer(b"".join(r.iter_bytes()), dtype="<f4")
        job_id = r.headers["x-job-id"]
    kept, rate = audio_of(client.get(f"/api/jobs/{job_id}/audio", params=RAW))
    np.testing.assert_array_equal(streamed, kept[0])
    with client.stream("POST", "/api/generate/music", json=body) as r:
        assert r.headers["x-watermark"] == "none"
        plain = np.frombuffer(b"".join(r.iter_bytes()), dtype="<f4")
    assert plain.shape == streamed.shape and not np.allclose(plain, streamed, atol=1e-4)


def test_always_marks_every_generation_and_never_refuses_the_mark(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path / "always", watermark="always") as c:
        r = c.post("/api/generate/music", json={"prompt": "calm piano", "duration": 1, "watermark": False})
        assert r.status_code == 200 and r.headers["x-watermark"] == "audioseal"
        assert c.get(f"/api/jobs/{r.headers['x-job-id']}").json()["request"]["watermark"] is True
    with make_client(tiny_hub, tmp_path / "never", watermark="never") as c:
        r = c.post("/api/generate/music", json={"prompt": "calm piano", "duration": 1, "watermark": True})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "watermark" and "AUDIOCRAFT_WATERMARK" in r.json()["error"]["message"]
        assert c.post("/api/generate/music", json={"prompt": "x", "duration": 1}).headers["x-watermark"] == "none"


def test_watermark_must_be_a_boolean(client):
    r = client.post("/api/generate/music", json={"prompt": "calm piano", "watermark": "yes"})
    assert r.status_code == 422 and "watermark" in r.text


def _direct(seal, audio: np.ndarray, rate: int) -> list[watermark.Detection]:
    return watermark.detect(seal.detector, audio, rate)


def test_detect_gives_the_detectors_verdict(client, seal):
    t = np.arange(44100 * 2) / 44100
    audio = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 550 * t)]).astype(np.float32)
    data = wav(audio, 44100)
    r = client.post("/api/watermark/detect", files={"audio": ("a.wav", data, "audio/wav")})
    assert r.status_code == 200, r.text
    verdict = r.json()
    want = _direct(seal, audio, 44100)
    assert [c["score"] for c in verdict["channels"]] == pytest.approx([d.score for d in want], abs=1e-6)
    assert verdict["score"] == pytest.approx(max(d.score for d in want), abs=1e-6)
    assert verdict["detected"] == (verdict["score"] > 0.5) and verdict["threshold"] == 0.5
    for c, d in zip(verdict["channels"], want, strict=True):
        assert c["message"] == (d.message if d.detected else None)
    assert (verdict["sample_rate"], verdict["duration_s"], verdict["model"]) == (44100, 2.0, "audioseal")
    # The same audio as base64 JSON, and async: a job of kind detect in the one queue.
    r = client.post("/api/watermark/detect", json={"audio": base64.b64encode(data).decode(), "async": True})
    assert r.status_code == 202
    job = wait_job(client, r.json()["job"]["id"])
    assert job["kind"] == "detect" and job["state"] == "succeeded" and job["model"] == "audioseal"
    assert job["result"]["info"]["score"] == f"{verdict['score']:.6g}" and "audio" not in job["request"]


def test_detect_reads_an_earlier_jobs_audio(client, seal):
    r = client.post("/api/generate/music", json={"prompt": "calm piano", "duration": 1, "watermark": True, **RAW})
    marked, rate = audio_of(r)
    verdict = client.post("/api/watermark/detect", json={"audio_job": r.headers["x-job-id"]}).json()
    assert verdict["score"] == pytest.approx(_direct(seal, marked, rate)[0].score, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "status", "says"),
    [
        ({"json": {}}, 422, "'audio' is required"),
        ({"files": {"audio": ("a.wav", b"not audio at all", "audio/wav")}}, 422, ""),
        ({"json": {"audio": "@@@"}}, 422, "base64"),
        ({"json": {"audio_job": "nosuchjob"}}, 404, ""),
        ({"json": {"audio_content": "nothing.wav"}}, 404, ""),
        ({"json": {"audio": "AAAA", "audio_job": "x"}}, 422, "once"),
        ({"json": {"audio": "AAAA", "prompt": "x"}}, 422, "prompt"),
        ({"json": {"audio_job": "x", "model": "nosuchmodel"}}, 404, "nosuchmodel"),
        ({"json": {"audio_job": "x", "model": "musicgen-small"}}, 422, "not a watermark model"),
        ({"files": {"other": ("a.wav", b"x", "audio/wav")}}, 422, "unknown file field"),
        ({"content": b"\x00\x01", "headers": {"content-type": "application/octet-stream"}}, 415, ""),
    ],
)
def test_bad_detect_requests_are_4xx(client, kwargs, status, says):
    r = client.post("/api/watermark/detect", **kwargs)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


def test_watermark_and_detect_on_the_redis_queue(tiny_hub, tmp_path, redis_url, seal):
    """The same answers when the queue is Redis: a watermarked generation, then a detect job of its audio."""
    with make_client(tiny_hub, tmp_path, queue_url=redis_url, watermark_message=7) as c:
        body = {"prompt": "rain", "duration": 1, "seed": 2, **RAW}
        plain, rate = audio_of(c.post("/api/generate/sound", json=body))
        r = c.post("/api/generate/sound", json={**body, "watermark": True})
        marked, _ = audio_of(r)
        np.testing.assert_allclose(marked, watermark.embed(seal.generator, plain, rate, 7), atol=1e-6)
        verdict = c.post("/api/watermark/detect", json={"audio_job": r.headers["x-job-id"]})
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["score"] == pytest.approx(_direct(seal, marked, rate)[0].score, abs=1e-6)
        listed = c.get("/api/jobs").json()["jobs"]
        assert [j["kind"] for j in listed][:1] == ["detect"]
