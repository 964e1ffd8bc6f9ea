"""The real server process on a free port, driven over HTTP as a user would (the PRD's checks)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("e2e-data")
    env = {
        **os.environ,
        "AUDIOCRAFT_PORT": str(port),
        "AUDIOCRAFT_MODELS_DIR": str(tiny_hub),
        "AUDIOCRAFT_DATA_DIR": str(data),
        "AUDIOCRAFT_DEVICE": "cpu",
    }
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((data / "server.log").read_text())
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("server did not become healthy")
    yield base
    proc.terminate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended.
    assert proc.wait(30) in (0, -15)
    log.close()
    assert "Application shutdown complete" in (data / "server.log").read_text()


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
