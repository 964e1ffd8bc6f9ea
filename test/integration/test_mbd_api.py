"""`decoder: "mbd"` (Multi-Band Diffusion) through the HTTP API (ASGI), on tiny models: the answer's
length, rate and channels for music, stereo, melody, continuation and a timeline decoded piece by
piece, and the 4xx answers to what it cannot do."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client

from server.engine import decode
from server.tiny.write import write_tiny_models

NATIVE = {"sample_rate": "native", "normalize": "none"}


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("mbd")) as c:
        yield c


def audio(resp) -> tuple[np.ndarray, int]:
    assert resp.status_code == 200, resp.text
    data, rate = sf.read(io.BytesIO(resp.content), dtype="float32", always_2d=True)
    return data, rate


def music(client, **body):
    return client.post("/api/generate/music", json={"prompt": "calm piano", "duration": 1, "seed": 3, **NATIVE, **body})


def test_mbd_music_has_the_length_rate_and_channels_and_is_not_encodecs(client):
    mbd, rate = audio(music(client, decoder="mbd", mbd_steps=4))
    assert (rate, mbd.shape) == (32000, (32000, 1))
    assert np.isfinite(mbd).all() and mbd.std() > 1e-4
    encodec, _ = audio(music(client))
    assert not np.allclose(mbd, encodec, atol=1e-3)  # the same tokens, decoded by diffusion instead
    again, _ = audio(music(client, decoder="mbd", mbd_steps=4))
    assert np.array_equal(mbd, again)  # the seed sets the diffusion's noise too


def test_mbd_steps_come_from_the_settings_when_the_request_names_none(client):
    default, _ = audio(music(client, decoder="mbd"))
    fewer, _ = audio(music(client, decoder="mbd", mbd_steps=2))
    assert default.shape == fewer.shape == (32000, 1)
    assert not np.array_equal(default, fewer)


def test_mbd_stereo_decodes_left_and_right(client):
    data, rate = audio(music(client, model="musicgen-stereo-small", decoder="mbd", mbd_steps=3))
    assert (rate, data.shape) == (32000, (32000, 2))
    assert not np.allclose(data[:, 0], data[:, 1])


def tone(seconds: float) -> bytes:
    t = np.arange(round(32000 * seconds)) / 32000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 32000, format="WAV")
    return buf.getvalue()


def test_mbd_melody_and_continuation(client):
    form = {"prompt": "calm piano", "duration": "1", "decoder": "mbd", "mbd_steps": "2", **NATIVE}
    r = client.post("/api/generate/melody", data=form, files={"melody": ("m.wav", tone(2), "audio/wav")})
    assert audio(r)[0].shape == (32000, 1)
    form["include_prompt"] = "false"
    r = client.post("/api/generate/continuation", data=form, files={"audio": ("a.wav", tone(1), "audio/wav")})
    assert audio(r)[0].shape == (32000, 1)


def test_mbd_decodes_a_long_timeline_piece_by_piece(client, monkeypatch):
    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 40)  # 2 s -> pieces of 0.8 s: three diffusion passes
    data, _ = audio(music(client, duration=2, decoder="mbd", mbd_steps=2))
    assert data.shape == (64000, 1) and np.isfinite(data).all()
    assert min(data[i : i + 25600].std() for i in (0, 25600, 38400)) > 1e-4  # every piece has signal


@pytest.mark.parametrize(
    "body,field",
    [
        ({"decoder": "diffusion"}, "decoder"),
        ({"decoder": "mbd", "mbd_steps": 0}, "mbd_steps"),
        ({"decoder": "mbd", "mbd_steps": 101}, "mbd_steps"),
        ({"decoder": "mbd", "mbd_steps": 2.5}, "mbd_steps"),
        ({"mbd_steps": 4}, "mbd_steps"),
        ({"decoder": "mbd", "stream": True}, "decoder"),
    ],
)
def test_bad_mbd_requests_are_422_naming_the_field(client, body, field):
    r = music(client, **body)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_audiogen_has_no_mbd(client):
    r = client.post("/api/generate/sound", json={"prompt": "rain", "duration": 1, "decoder": "mbd"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "decoder" and "16 kHz" in r.json()["error"]["message"]


def test_mbd_not_installed_says_how_to_install_it(tmp_path):
    hub = tmp_path / "hub"
    write_tiny_models(hub, names=["musicgen-small"])
    with make_client(hub, tmp_path / "data", auto_download=False) as c:
        r = music(c, decoder="mbd")
        assert r.status_code == 409, r.text  # at submission, as for the model itself
        assert "models pull mbd-musicgen-32khz" in r.text
        assert c.get("/api/jobs").json()["jobs"] == []
