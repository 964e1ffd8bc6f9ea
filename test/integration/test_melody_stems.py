"""Melody conditioning with htdemucs stems through the HTTP API (ASGI), on tiny models: the stems
path runs, is chosen by `melody_stems` (unset: when htdemucs is installed), changes the result, and
htdemucs is managed like any model (listed with its licence, deleted, imported)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client, wait_job

from lib.catalogue import HTDEMUCS

NATIVE = {"sample_rate": "native", "normalize": "none"}


@pytest.fixture(scope="module")
def stems_hub(tmp_path_factory):
    from server.tiny.write import write_tiny_models

    hub = tmp_path_factory.mktemp("stems-hub")
    write_tiny_models(hub, names=["musicgen-melody", "htdemucs"])
    return hub


@pytest.fixture(scope="module")
def client(stems_hub, tmp_path_factory):
    with make_client(stems_hub, tmp_path_factory.mktemp("stems")) as c:
        yield c


@pytest.fixture(scope="module")
def no_stems_client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("no-stems")) as c:
        yield c


def song(seconds: float = 2.0, rate: int = 44100) -> bytes:
    """Notes over a kick: something for the separator to split."""
    t = np.arange(round(rate * seconds)) / rate
    audio = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 55 * t) * np.exp(-8 * (t % 0.5))
    buf = io.BytesIO()
    sf.write(buf, np.stack([audio, audio], axis=1).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def melody_body(**extra) -> dict:
    return {"prompt": "strings", "duration": 1, "seed": 5, "melody": base64.b64encode(song()).decode(), **extra}


def audio_of(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    audio, _ = sf.read(io.BytesIO(resp.content), dtype="float32")
    return audio


def test_stems_are_used_when_installed_and_recorded_in_the_job(client):
    r = client.post("/api/generate/melody", json=melody_body(**{"async": True}))
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    assert job["request"]["melody_stems"] is True  # unset, decided at submission: htdemucs is installed


def test_false_keeps_the_full_mix_and_true_runs_the_separator(stems_hub, no_stems_client, tmp_path):
    """With the tiny weights the stems barely move the tokens (the conformance suite checks the chroma
    itself against AudioCraft's); what shows here is which path ran: the separator is loaded for it."""
    with make_client(stems_hub, tmp_path) as c:
        full = audio_of(c.post("/api/generate/melody", json=melody_body(melody_stems=False, **NATIVE)))
        assert c.get(f"/api/models/{HTDEMUCS.name}").json()["loaded"] is False
        # The full mix's chroma is today's path: the same audio as where htdemucs is not installed at all.
        without = audio_of(no_stems_client.post("/api/generate/melody", json=melody_body(**NATIVE)))
        np.testing.assert_array_equal(full, without)
        stems = audio_of(c.post("/api/generate/melody", json=melody_body(melody_stems=True, **NATIVE)))
        assert stems.shape == full.shape == (32000,)
        info = c.get(f"/api/models/{HTDEMUCS.name}").json()
        assert info["loaded"] is True and info["memory_bytes"] > 0 and info["in_use"] == 0


def test_stems_in_a_multipart_form(client):
    r = client.post(
        "/api/generate/melody",
        data={"prompt": "strings", "duration": "1", "seed": "5", "melody_stems": "false", **NATIVE},
        files={"melody": ("song.wav", song(), "audio/wav")},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["maybe", 1, "yes"])
def test_melody_stems_must_be_a_boolean(client, value):
    r = client.post("/api/generate/melody", json=melody_body(melody_stems=value))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "melody_stems"


def test_a_form_spells_it_true_or_false(client):
    r = client.post(
        "/api/generate/melody",
        data={"duration": "1", "melody_stems": "yes"},
        files={"melody": ("song.wav", song(), "audio/wav")},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "melody_stems"


def test_stems_without_htdemucs_is_a_409_with_the_pull_command(no_stems_client):
    r = no_stems_client.post("/api/generate/melody", json=melody_body(melody_stems=True))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "model_not_installed"
    assert error["field"] == "melody_stems"
    assert "resource-audiocraft models pull htdemucs" in error["hint"]
    assert "melody_stems: false" in error["message"]
    # Unset, it is the full mix there: no error.
    assert no_stems_client.post("/api/generate/melody", json=melody_body(**NATIVE)).status_code == 200


def test_htdemucs_is_listed_with_its_licence(client):
    r = client.get(f"/api/models/{HTDEMUCS.name}")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["licence"] == "MIT"
    assert info["capabilities"] == ["stems"]
    assert info["installed"] is True
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    assert HTDEMUCS.name in names


def test_htdemucs_cannot_generate(client):
    r = client.post("/api/generate/music", json={"prompt": "x", "duration": 1, "model": "htdemucs"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "model"


def test_delete_then_import_the_legacy_checkpoint(tmp_path):
    """Deleted, stems are a 409; its legacy .th imported, they run again."""
    from server.hub.importer import import_model
    from server.tiny import demucs as tiny
    from server.tiny.write import write_tiny_models

    hub = tmp_path / "hub"
    write_tiny_models(hub, names=["musicgen-melody", "htdemucs"])
    with make_client(hub, tmp_path / "data") as c:
        r = c.delete(f"/api/models/{HTDEMUCS.name}")
        assert r.status_code == 200, r.text
        assert c.get(f"/api/models/{HTDEMUCS.name}").json()["installed"] is False
        assert c.post("/api/generate/melody", json=melody_body(melody_stems=True)).status_code == 409
        checkpoint = tiny.save_th(tmp_path, tiny.build(tiny.TINY_KWARGS, seed=3), tiny.TINY_KWARGS)
        imported = import_model(checkpoint, hub)
        assert imported[0].repo == HTDEMUCS.repo
        assert c.get(f"/api/models/{HTDEMUCS.name}").json()["installed"] is True
        r = c.post("/api/generate/melody", json=melody_body(melody_stems=True))
        assert r.status_code == 200, r.text
