"""The watermark end to end with a tiny AudioSeal pair that works: a pair of random weights detects
nothing (test_watermark_api.py checks the plumbing exactly on one), so this one is trained first
(server/tiny/audioseal.py train_to_detect, about a hundred seeded steps at tiny widths) and written
in the published layout. Through the HTTP API: a generation made with `watermark: true` is detected
by POST /api/watermark/detect, the same generation without the mark is not, and neither is a plain
tone. The verdicts are the service's own threshold (0.5) on the trained detector; the margins are
wide (the score of marked audio near 1, of clean audio near 0), so they do not depend on the CPU's
kernels. The message bits are not trained (they need far longer): not checked here."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client

from lib.catalogue import get_spec
from server.tiny import audioseal
from server.tiny.write import write_snapshot, write_tiny_models

TRAIN_STEPS = 150
RAW = {"sample_rate": "native", "normalize": "none", "format": "wav", "bit_depth": 32}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    hub = tmp_path_factory.mktemp("trained-seal-hub")
    write_tiny_models(hub, ["musicgen-small"])
    write_snapshot(get_spec("audioseal"), hub, lambda out: audioseal.save_files(out, seed=3, train_steps=TRAIN_STEPS))
    with make_client(hub, tmp_path_factory.mktemp("trained-seal")) as c:
        yield c


def detect(client, audio: bytes) -> dict:
    r = client.post("/api/watermark/detect", files={"audio": ("a.wav", audio, "audio/wav")})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_marked_generation_is_detected_and_the_same_one_unmarked_is_not(client):
    body = {"prompt": "calm piano", "duration": 2, "seed": 21, **RAW}
    marked = client.post("/api/generate/music", json={**body, "watermark": True})
    plain = client.post("/api/generate/music", json=body)
    assert marked.status_code == plain.status_code == 200
    assert marked.headers["x-watermark"] == "audioseal" and plain.headers["x-watermark"] == "none"

    found, clean = detect(client, marked.content), detect(client, plain.content)
    assert found["detected"] is True and found["score"] > 0.9, found
    assert clean["detected"] is False and clean["score"] < 0.1, clean


def test_a_plain_tone_carries_no_mark(client):
    t = np.arange(32000 * 2) / 32000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, tone, 32000, format="WAV", subtype="FLOAT")
    verdict = detect(client, buf.getvalue())
    assert verdict["detected"] is False, verdict
