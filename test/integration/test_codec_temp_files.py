"""The codec's temporary files (server/engine/codec/service.py) never outlive their request: the
synchronous HTTP answers, the JSON format, the normalisations, a failed decode, and the direct
calls all leave none behind (a test once left 115 MB in /tmp per run)."""

from __future__ import annotations

import io
import tempfile

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client

from lib.schemas import DecodeOptions
from server.engine.codec.codec import Codec
from server.engine.codec.service import decode_file, encode_file, open_ecdc


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """Where tempfile puts this test's temporary files (the codec's go through tempfile.mkstemp)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def left(temp) -> list[str]:
    return sorted(p.name for p in temp.glob("audiocraft-codec-*"))


def wav_bytes(seconds: float = 1.0, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2, axis=1).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_http_answers_leave_no_temporary_file(tiny_hub, tmp_path, temp_dir):
    with make_client(tiny_hub, tmp_path / "data") as client:
        for fields in ({}, {"format": "json"}, {"model": "encodec-48khz"}):
            r = client.post("/api/encode", files={"file": ("in.wav", wav_bytes())}, data=fields)
            assert r.status_code == 200, r.text
            assert left(temp_dir) == [], fields
        ecdc = client.post("/api/encode", files={"file": ("in.wav", wav_bytes())}).content
        for fields in (
            {},
            {"normalize": "peak"},
            {"normalize": "loudness"},
            {"format": "flac", "sample_rate": "44100"},
        ):
            r = client.post("/api/decode", files={"file": ("in.ecdc", ecdc)}, data=fields)
            assert r.status_code == 200, r.text
            assert left(temp_dir) == [], fields
        r = client.post("/api/decode", files={"file": ("in.ecdc", ecdc[: len(ecdc) // 2])})
        assert r.status_code in (400, 422), r.text
        assert left(temp_dir) == []


def test_direct_calls_leave_only_the_answer_the_caller_owns(tiny_hub, tmp_path, temp_dir):
    from lib.settings import Settings
    from server.models.registry import ModelRegistry

    codec = Codec.of(ModelRegistry(Settings(models_dir=tiny_hub, device="cpu")).get("encodec-24khz"))
    data = wav_bytes()
    enc = encode_file(codec, io.BytesIO(data), len(data), "in.wav", codec.bandwidths[0])
    assert left(temp_dir) == [enc.path.name]  # the answer only: its spool is gone
    with open(enc.path, "rb") as f:
        dec = decode_file(open_ecdc(lambda _n: codec, f, enc.ecdc_bytes), f, DecodeOptions(normalize="peak"), 0)
    assert left(temp_dir) == sorted([enc.path.name, dec.path.name])
    enc.path.unlink()
    dec.path.unlink()
    assert left(temp_dir) == []
