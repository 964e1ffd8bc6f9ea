"""Smoke: is the running service up and doing its job? Quick (well under 30 s on tiny models)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import wave

import pytest

from lib.schemas import Health, ModelList


def test_health_is_ok_and_fast(smoke_service):
    with smoke_service.client() as c:
        t0 = time.monotonic()
        r = c.get("/health")
        elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    health = Health.model_validate(r.json())
    assert health.status == "ok"
    assert health.queue.capacity >= 1
    assert elapsed < 1.0 * smoke_service.patience  # it never waits on generation


def test_models_list_has_the_catalogue(smoke_service):
    with smoke_service.client() as c:
        r = c.get("/api/models")
    assert r.status_code == 200, r.text
    names = {m.name for m in ModelList.model_validate(r.json()).models}
    assert {"musicgen-small", "encodec-32khz"} <= names


def test_one_second_of_music(smoke_service):
    with smoke_service.client() as c:
        models = ModelList.model_validate(c.get("/api/models").json()).models
        music = [m for m in models if m.installed and "music" in m.capabilities]
        if not music:
            pytest.skip("no music model is installed on the service")
        name = next((m.name for m in music if m.loaded), music[0].name)
        r = c.post(
            "/api/generate/music",
            json={"prompt": "smoke test: a short calm chord", "duration": 1, "model": name, "seed": 1},
            timeout=20.0 * smoke_service.patience,
        )
    assert r.status_code == 200, r.text
    assert r.headers["X-Model"] == name
    assert r.headers["X-Seed"] == "1"
    with wave.open(io.BytesIO(r.content)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert abs(seconds - 1.0) < 0.05


def test_unknown_route_answers_the_error_envelope(smoke_service):
    with smoke_service.client() as c:
        r = c.get("/api/jobs/no-such-job")
    assert r.status_code == 404
    assert {"code", "message"} <= set(r.json()["error"])


def test_cli_status_reports_healthy(smoke_service):
    """The contract's status command sees the same service (exit 0, JSON with booleans)."""
    cmd = [sys.executable, "-m", "cli.main", "status", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, timeout=10 * smoke_service.patience)
    assert r.stdout.startswith("{"), r.stderr
    data = json.loads(r.stdout)
    assert data["running"] is True and data["healthy"] is True
    assert r.returncode == 0
