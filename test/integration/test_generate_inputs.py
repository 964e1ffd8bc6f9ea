"""Melody, continuation and stereo through the HTTP API (ASGI), with real files in every container,
and the answers to bad uploads."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client, wait_job
from audio_files import make_m4a
from waiting import TERMINAL, get_json, job_signature, wait_for_progress

from lib.content import ContentStore

NATIVE = {"sample_rate": "native", "normalize": "none"}


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("inputs")) as c:
        yield c


def tone_file(fmt: str, seconds: float = 3.0, rate: int = 44100, channels: int = 2) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * (1 + c / 10) * t) for c in range(channels)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def info(resp):
    assert resp.status_code == 200, resp.text
    return sf.info(io.BytesIO(resp.content))


@pytest.mark.parametrize("fmt", ["MP3", "WAV", "FLAC", "OGG"])
def test_melody_upload_in_each_container(client, fmt):
    data = tone_file(fmt, rate=22050 if fmt == "MP3" else 48000)
    r = client.post(
        "/api/generate/melody",
        data={"prompt": "calm piano", "duration": "2", **NATIVE},
        files={"melody": (f"theme.{fmt.lower()}", data, "application/octet-stream")},
    )
    got = info(r)
    assert (got.samplerate, got.frames, got.channels) == (32000, 64000, 1)
    assert r.headers["x-model"] == "musicgen-melody"


def test_melody_m4a_upload(client):
    audio = 0.3 * np.sin(2 * np.pi * 330 * np.arange(48000 * 2) / 48000).astype(np.float32)
    r = client.post(
        "/api/generate/melody",
        data={"duration": "1", **NATIVE},
        files={"melody": ("theme.m4a", make_m4a(audio[None], 48000), "audio/mp4")},
    )
    assert info(r).frames == 32000


def test_melody_json_base64_trimmed_async_keeps_no_base64(client):
    body = {
        "prompt": "strings",
        "duration": 2,
        "melody": base64.b64encode(tone_file("MP3")).decode(),
        "melody_start": 0.5,
        "melody_end": 2.5,
        "async": True,
        "model": "musicgen-stereo-melody",
    }
    r = client.post("/api/generate/melody", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "melody"
    assert "melody" not in job["request"] and job["request"]["melody_end"] == 2.5
    assert job["result"]["channels"] == 2


def test_melody_from_an_earlier_job_and_from_content(client, tmp_path):
    first = client.post("/api/generate/music", json={"prompt": "bells", "duration": 2})
    job_id = first.headers["x-job-id"]
    r = client.post("/api/generate/melody", json={"duration": 1, "melody_job": job_id, **NATIVE})
    assert info(r).frames == 32000
    settings = client.app.state.services.settings
    src = tmp_path / "theme.flac"
    src.write_bytes(tone_file("FLAC"))
    ContentStore.for_data_dir(settings.data_dir).add_file(src, name="theme")
    r = client.post("/api/generate/melody", json={"duration": 1, "melody_content": "theme", **NATIVE})
    assert info(r).frames == 32000


@pytest.mark.parametrize("include_prompt,seconds", [(True, 3.0 + 2.0), (False, 2.0)])
def test_continuation_mp3_upload(client, include_prompt, seconds):
    r = client.post(
        "/api/generate/continuation",
        data={"prompt": "keep going", "duration": "2", "include_prompt": str(include_prompt).lower(), **NATIVE},
        files={"audio": ("start.mp3", tone_file("MP3", seconds=3.0, rate=32000), "audio/mpeg")},
    )
    got = info(r)
    # The prompt counts in whole 20 ms frames; MP3 adds a little padding, so allow one frame.
    assert abs(got.frames - seconds * 32000) <= 640
    if not include_prompt:
        assert got.frames == 64000


def test_continuation_without_text_on_a_stereo_model_from_a_job(client):
    body = {"prompt": "drums", "duration": 1, "model": "musicgen-stereo-small"}
    first = client.post("/api/generate/music", json=body)
    r = client.post(
        "/api/generate/continuation",
        json={"audio_job": first.headers["x-job-id"], "duration": 1, "model": "musicgen-stereo-small", **NATIVE},
    )
    got = info(r)
    assert (got.channels, got.frames) == (2, 64000)


def test_long_continuation_is_exact(client):
    r = client.post(
        "/api/generate/continuation",
        data={"duration": "40", "include_prompt": "false", **NATIVE},
        files={"audio": ("start.wav", tone_file("WAV", seconds=2.0, rate=32000, channels=1), "audio/wav")},
    )
    assert info(r).frames == 40 * 32000


def test_jobs_endpoint_takes_melody_and_continuation(client):
    audio = base64.b64encode(tone_file("WAV", seconds=1.0)).decode()
    items = [
        {"kind": "melody", "melody": audio, "duration": 1},
        {"kind": "continuation", "audio": audio, "duration": 1, "include_prompt": False},
    ]
    r = client.post("/api/jobs", json=items)
    assert r.status_code == 202, r.text
    for job_id in r.json()["ids"]:
        job = wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert job["result"]["duration_s"] == 1.0


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
@pytest.mark.parametrize("path,extra", [("music", {}), ("melody", {"model": "musicgen-stereo-melody"})])
def test_stereo_models_give_two_channels_in_every_format(client, fmt, path, extra):
    body = {"prompt": "wide synth", "duration": 1, "format": fmt, "model": "musicgen-stereo-small", **extra}
    if path == "melody":
        body["melody"] = base64.b64encode(tone_file("WAV", seconds=1.0)).decode()
    got = info(client.post(f"/api/generate/{path}", json=body))
    assert got.channels == 2


def _wav(frames: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, frames, rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def short_client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("short"), max_duration_s=5) as c:
        yield c


BAD_UPLOADS = {
    "empty": b"",
    "truncated header": _wav(np.zeros((16000, 1), np.float32))[:30],
    "truncated mp3": tone_file("MP3")[:200],
    "not audio": b"%PDF-1.4 this is a document, not a song",
    "no samples": _wav(np.zeros((0, 1), np.float32)),
    "8 channels": _wav(np.zeros((1600, 8), np.float32)),
    "too long": _wav(np.zeros((16000 * 7, 1), np.float32)),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
@pytest.mark.parametrize("path,field", [("melody", "melody"), ("continuation", "audio")])
def test_bad_uploads_are_4xx_with_a_message(short_client, case, path, field):
    c = short_client
    files = {field: ("in.wav", BAD_UPLOADS[case], "audio/wav")}
    r = c.post(f"/api/generate/{path}", data={"duration": "1"}, files=files)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    err = r.json()["error"]
    assert err["field"].startswith(field)
    assert err["message"] and ("send" in err["message"] or "trim" in err["message"] or "Mix" in err["message"])
    assert c.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"duration": 1}, 422, "melody"),
        ({"duration": 1, "melody": "not base64!"}, 422, "melody"),
        ({"duration": 1, "melody_job": "nope"}, 404, None),
        ({"duration": 1, "melody_content": "nope"}, 404, None),
        ({"duration": 1, "melody": "AAAA", "melody_job": "x"}, 422, "melody"),
        ({"duration": 1, "melody": "AAAA", "melody_start": 2, "melody_end": 1}, 422, "body"),
        ({"duration": 1, "melody": "AAAA", "model": "musicgen-small"}, 422, "model"),
    ],
)
def test_bad_melody_requests(client, body, status, field):
    r = client.post("/api/generate/melody", json=body)
    assert r.status_code == status, r.text
    if field:
        assert r.json()["error"]["field"] == field


def test_melody_start_past_the_end(client):
    r = client.post(
        "/api/generate/melody",
        data={"duration": "1", "melody_start": "10"},
        files={"melody": ("m.wav", tone_file("WAV"), "audio/wav")},
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "melody_start"


def test_openapi_documents_the_new_endpoints(client):
    doc = client.get("/openapi.json").json()
    melody = doc["paths"]["/api/generate/melody"]["post"]["requestBody"]["content"]
    assert melody["application/json"]["schema"]["$ref"].endswith("/MelodyRequest")
    form = melody["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    upload = doc["components"]["schemas"][form]["properties"]["melody"]
    assert upload["format"] == "binary"
    props = doc["components"]["schemas"]["ContinuationRequest"]["properties"]
    assert {"audio", "audio_job", "audio_content", "include_prompt", "prompt", "duration"} <= set(props)
    jobs = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert jobs["$ref"].endswith("/JobsRequest")
    one, many = doc["components"]["schemas"]["JobsRequest"]["anyOf"]  # one item (by kind), or a list of them
    assert many["items"] == one
    assert {i["$ref"].rsplit("/", 1)[1] for i in one["oneOf"]} == {
        "MusicJob", "SoundJob", "MelodyJob", "ContinuationJob", "StyleJob"
    }  # fmt: skip


def test_continuation_on_audiogen_past_its_window(client):
    r = client.post(
        "/api/generate/continuation",
        data={"prompt": "rain", "duration": "12", "include_prompt": "false", "model": "audiogen-medium", **NATIVE},
        files={"audio": ("rain.ogg", tone_file("OGG", seconds=2.0, rate=48000), "audio/ogg")},
    )
    got = info(r)
    assert (got.samplerate, got.channels, got.frames) == (16000, 1, 12 * 16000)


def test_progress_of_a_long_job_covers_the_whole_run(client):
    """45 s is two windows: progress climbs once from 0 to 1, never restarting per window."""
    r = client.post("/api/generate/music", json={"prompt": "x", "duration": 45, "async": True})
    job_id = r.json()["job"]["id"]
    seen = []

    def probe():
        job = get_json(client, f"/api/jobs/{job_id}")
        if job["state"] == "running":
            seen.append(job["progress"])
        return (job if job["state"] in TERMINAL else None), job_signature(job)

    job = wait_for_progress(probe, f"job {job_id} to end", poll_s=0.02)
    assert job["state"] == "succeeded"
    assert seen == sorted(seen)
    assert len(set(seen)) > 2
    assert job["result"]["duration_s"] == 45.0
