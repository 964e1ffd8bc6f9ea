"""The real server process on a free port, driven over HTTP as a user would (the PRD's checks)."""

from __future__ import annotations

import io

import httpx
import pytest
import soundfile as sf
from server_process import ServerProcess
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("e2e-data")).start()
    yield proc.base
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended.
    assert proc.terminate() in (0, -15)
    assert "Application shutdown complete" in proc.log()


def test_health_answers(server):
    r = httpx.get(f"{server}/health", timeout=QUICK_HANG_GUARD_S)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_prd_music_generation(server):
    r = httpx.post(
        f"{server}/api/generate/music",
        json={"prompt": "upbeat electronic music", "duration": 10},
        timeout=HANG_GUARD_S,
    )
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.frames, info.subtype, info.format) == (44100, 441000, "PCM_16", "WAV")


def test_sound_generation_is_5s(server):
    r = httpx.post(f"{server}/api/generate/sound", json={"prompt": "thunderstorm with rain"}, timeout=HANG_GUARD_S)
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.frames, info.format) == (44100, 5 * 44100, "WAV")
    assert r.headers["x-model"] == "audiogen-medium"


def test_prd_mp3(server):
    r = httpx.post(
        f"{server}/api/generate/music", json={"prompt": "piano", "duration": 3, "format": "mp3"}, timeout=HANG_GUARD_S
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/mpeg"
    assert abs(sf.info(io.BytesIO(r.content)).duration - 3.0) < 0.1


def test_prd_model_list(server):
    models = httpx.get(f"{server}/api/models", timeout=QUICK_HANG_GUARD_S).json()["models"]
    assert any(m["name"] == "musicgen-small" and m["installed"] for m in models)


def test_errors_then_still_serving(server):
    def post(body: bytes, ctype: str | None) -> int:
        headers = {"content-type": ctype} if ctype else {}
        return httpx.post(
            f"{server}/api/generate/music", content=body, headers=headers, timeout=QUICK_HANG_GUARD_S
        ).status_code

    assert post(b"{", "application/json") == 400
    assert post(b'{"prompt": "x"}', None) == 415  # JSON only as application/json
    assert (
        httpx.post(
            f"{server}/api/generate/music", json={"prompt": "x", "model": "nope"}, timeout=QUICK_HANG_GUARD_S
        ).status_code
        == 404
    )
    assert httpx.get(f"{server}/health", timeout=QUICK_HANG_GUARD_S).status_code == 200


def _mp3(seconds: float = 2.0) -> bytes:
    import numpy as np

    t = np.arange(int(44100 * seconds)) / 44100
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 44100, format="MP3")
    return buf.getvalue()


def test_melody_and_continuation_with_an_mp3_upload(server):
    mp3 = _mp3()
    r = httpx.post(
        f"{server}/api/generate/melody",
        data={"prompt": "strings", "duration": "3"},
        files={"melody": ("theme.mp3", mp3, "audio/mpeg")},
        timeout=HANG_GUARD_S,
    )
    assert r.status_code == 200, r.text
    assert sf.info(io.BytesIO(r.content)).frames == 3 * 44100
    r = httpx.post(
        f"{server}/api/generate/continuation",
        data={"duration": "2", "include_prompt": "false", "model": "musicgen-stereo-small"},
        files={"audio": ("theme.mp3", mp3, "audio/mpeg")},
        timeout=HANG_GUARD_S,
    )
    assert r.status_code == 200, r.text
    info = sf.info(io.BytesIO(r.content))
    assert (info.channels, info.frames) == (2, 2 * 44100)
    bad = httpx.post(
        f"{server}/api/generate/melody",
        files={"melody": ("x.mp3", b"not audio", "audio/mpeg")},
        timeout=QUICK_HANG_GUARD_S,
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "melody"


def test_long_music_is_exact(server):
    r = httpx.post(f"{server}/api/generate/music", json={"prompt": "x", "duration": 45}, timeout=HANG_GUARD_S)
    assert r.status_code == 200, r.text
    assert sf.info(io.BytesIO(r.content)).frames == 45 * 44100
