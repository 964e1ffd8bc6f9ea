"""MusicGen-Style through the HTTP API (ASGI) on the tiny musicgen-style: POST /api/generate/style with
the style audio as an upload, base64, an earlier job or a content item, on both job queues; the
excerpt's settings in the stored request; the answers to bad requests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client, wait_job

NATIVE = {"sample_rate": "native", "normalize": "none"}


def style_file(seconds: float = 4.0, rate: int = 44100, pitch_hz: float = 220.0, fmt: str = "WAV") -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    rng = np.random.default_rng(int(pitch_hz))
    audio = 0.3 * np.sin(2 * np.pi * pitch_hz * t * (1 + 0.1 * np.sin(3 * t))) + 0.05 * rng.standard_normal(t.shape)
    buf = io.BytesIO()
    sf.write(buf, np.stack([audio, audio[::-1]], axis=1).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("style")) as c:
        yield c


def _audio(resp) -> tuple[np.ndarray, int]:
    assert resp.status_code == 200, resp.text
    data, rate = sf.read(io.BytesIO(resp.content), dtype="float32")
    return data, rate


def _style(client, data: bytes, **fields):
    body = {"prompt": "lofi", "duration": "1", "seed": "7", **NATIVE, **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/generate/style", data=body, files={"style": ("style.wav", data, "audio/wav")})


def test_style_upload_answers_audio_from_the_style_model(client):
    r = _style(client, style_file(fmt="FLAC"))
    audio, rate = _audio(r)
    assert (rate, audio.shape) == (32000, (32000,))
    assert r.headers["x-model"] == "musicgen-style"


def test_the_style_audio_steers_the_music(client):
    """Same seed and text: the same style gives the same audio, another style (or none) other audio."""
    a, _ = _audio(_style(client, style_file(pitch_hz=220.0)))
    again, _ = _audio(_style(client, style_file(pitch_hz=220.0)))
    other, _ = _audio(_style(client, style_file(pitch_hz=880.0)))
    shorter, _ = _audio(_style(client, style_file(pitch_hz=220.0), excerpt_length=1.5, eval_q=1))
    double, _ = _audio(_style(client, style_file(pitch_hz=220.0), cfg_coef_beta=5.0))
    text_only = client.post(
        "/api/generate/music", json={"prompt": "lofi", "duration": 1, "seed": 7, "model": "musicgen-style", **NATIVE}
    )
    plain, _ = _audio(text_only)
    np.testing.assert_array_equal(a, again)
    for different in (other, shorter, plain, double):
        assert not np.array_equal(a, different)


def test_json_base64_async_stores_the_excerpt_settings_not_the_audio(client):
    body = {"duration": 1, "style": base64.b64encode(style_file()).decode(), "excerpt_length": 2.5, "eval_q": 2,
            "async": True}  # fmt: skip
    r = client.post("/api/generate/style", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "style" and job["model"] == "musicgen-style"
    request = job["request"]
    assert "style" not in request and request["excerpt_length"] == 2.5 and request["eval_q"] == 2
    # The result says what the model listened to: 2.5 s of the 4 s, from a start drawn from the seed.
    info = job["result"]["info"]
    assert (info["style_excerpt_s"], info["style_eval_q"]) == ("2.5", "2")
    assert 0.0 <= float(info["style_excerpt_start_s"]) <= 1.5
    # An earlier job's audio as the style: one second of it is too short for the default 3 s excerpt.
    r = client.post("/api/generate/style", json={"duration": 1, "style_job": job["id"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "style", r.text
    r = client.post("/api/generate/style", json={"duration": 1, "style_job": job["id"], "excerpt_length": 1.0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "excerpt_length", r.text


def test_style_from_an_earlier_job(client):
    first = client.post("/api/generate/music", json={"prompt": "bells", "duration": 2, "model": "musicgen-style"})
    assert first.status_code == 200, first.text
    r = client.post("/api/generate/style", json={"duration": 1, "style_job": first.headers["x-job-id"],
                                                 "excerpt_length": 1.5, **NATIVE})  # fmt: skip
    audio, _ = _audio(r)
    assert audio.shape == (32000,)
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    assert job["request"]["excerpt_length"] == 1.5 and job["request"]["style_job"] == first.headers["x-job-id"]


def test_jobs_endpoint_takes_a_style_item(client):
    item = {"kind": "style", "duration": 1, "style": base64.b64encode(style_file()).decode()}
    r = client.post("/api/jobs", json=item)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["jobs"][0]["id"])
    assert job["state"] == "succeeded", job


@pytest.mark.parametrize(
    "fields,seconds,field",
    [
        ({"excerpt_length": 1.0}, 4.0, "excerpt_length"),
        ({"excerpt_length": 5.0}, 6.0, "excerpt_length"),
        ({"eval_q": 7}, 4.0, "eval_q"),
        ({"cfg_coef_beta": 0}, 4.0, "cfg_coef_beta"),
        ({"cfg_coef_beta": 25}, 4.0, "cfg_coef_beta"),
        ({}, 2.0, "style"),  # shorter than the 3 s excerpt
        ({"excerpt_length": 4.5}, 4.0, "style"),
    ],
)
def test_bad_style_requests_are_422_naming_the_field(client, fields, seconds, field):
    r = _style(client, style_file(seconds=seconds), **fields)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert error["message"]


def test_style_needs_its_audio_and_a_style_model(client):
    r = client.post("/api/generate/style", json={"prompt": "lofi", "duration": 1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "style", r.text
    r = _style(client, style_file(), model="musicgen-small")
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["field"] == "model"


def test_style_on_both_queues(tiny_hub, tmp_path, backend):
    on_redis = {"queue_url": backend.redis_url} if backend.name == "redis" else {}
    with make_client(tiny_hub, tmp_path, **on_redis) as c:
        r = _style(c, style_file())
        audio, _ = _audio(r)
        assert audio.shape == (32000,)
        job = c.get(f"/api/jobs/{r.headers['x-job-id']}").json()
        assert job["kind"] == "style" and job["request"]["excerpt_length"] == 3.0


def test_openapi_documents_the_style_endpoint(client):
    doc = client.get("/openapi.json").json()
    content = doc["paths"]["/api/generate/style"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"].endswith("/StyleRequest")
    form = content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert doc["components"]["schemas"][form]["properties"]["style"]["format"] == "binary"
    props = doc["components"]["schemas"]["StyleRequest"]["properties"]
    assert {"style", "style_job", "style_content", "excerpt_length", "eval_q", "cfg_coef_beta"} <= set(props)
    assert (props["excerpt_length"]["minimum"], props["excerpt_length"]["maximum"]) == (1.5, 4.5)


def test_a_streamed_style_answer_is_the_whole_one(client):
    body = {"prompt": "lofi", "duration": 1, "seed": 5, "style": base64.b64encode(style_file()).decode(),
            "bit_depth": 32, **NATIVE}  # fmt: skip
    whole, _ = _audio(client.post("/api/generate/style", json=body))
    r = client.post("/api/generate/style", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    streamed, rate = sf.read(io.BytesIO(r.content), dtype="float32")
    assert rate == 32000 and streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() < 1e-4  # the streaming codec's float rounding


def test_style_with_the_mbd_decoder_and_a_watermark(client):
    r = _style(client, style_file(), decoder="mbd", mbd_steps=2, watermark="true")
    audio, _ = _audio(r)
    assert audio.shape == (32000,) and r.headers["x-watermark"] == "audioseal"
