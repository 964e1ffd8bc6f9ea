"""The real server process on a free port, driven over HTTP as a user would (the PRD's checks)."""

from __future__ import annotations

import io

import httpx
import pytest
import soundfile as sf
from server_process import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("e2e-data")).start()
    yield proc.base
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended.
    assert proc.terminate(30) in (0, -15)
    assert "Application shutdown complete" in proc.log()


def test_health_answers(server):
    r = httpx.get(f"{server}/health", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_prd_music_generation(server):
    r = httpx.post(
        f"{server}/api/generate/music",
        json={"prompt": "upbeat electronic music", "duration": 10},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.frames, info.subtype, info.format) == (44100, 441000, "PCM_16", "WAV")


def test_sound_generation_is_5s(server):
    r = httpx.post(f"{server}/api/generate/sound", json={"prompt": "thunderstorm with rain"}, timeout=300)
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.frames, info.format) == (44100, 5 * 44100, "WAV")
    assert r.headers["x-model"] == "audiogen-medium"


def test_prd_mp3(server):
    r = httpx.post(
        f"{server}/api/generate/music", json={"prompt": "piano", "duration": 3, "format": "mp3"}, timeout=300
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/mpeg"
    assert abs(sf.info(io.BytesIO(r.content)).duration - 3.0) < 0.1


def test_prd_model_list(server):
    models = httpx.get(f"{server}/api/models", timeout=5).json()["models"]
    assert any(m["name"] == "musicgen-small" and m["installed"] for m in models)


def test_errors_then_still_serving(server):
    assert httpx.post(f"{server}/api/generate/music", content=b"{", timeout=5).status_code == 400
    assert (
        httpx.post(f"{server}/api/generate/music", json={"prompt": "x", "model": "nope"}, timeout=5).status_code == 404
    )
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
