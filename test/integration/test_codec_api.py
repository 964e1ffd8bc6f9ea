"""POST /api/encode and /api/decode through the ASGI app, on the tiny EnCodec checkpoints."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client
from audio_files import make_m4a

from server.engine.codec import container


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("codec-api")) as c:
        yield c


def signal(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.03 * rng.standard_normal(t.size)
    return np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def audio_file(seconds=2.0, rate=44100, channels=2, fmt="WAV", subtype="PCM_16", seed=0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal(seconds, rate, channels, seed), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def m4a_file(seconds=1.5, rate=44100) -> bytes:
    return make_m4a(np.ascontiguousarray(signal(seconds, rate, 2).T), rate)


def encode(client, data: bytes, name="in.wav", **fields):
    return client.post("/api/encode", files={"file": (name, data)}, data={k: str(v) for k, v in fields.items()})


def decode(client, data: bytes, **fields):
    return client.post("/api/decode", files={"file": ("in.ecdc", data)}, data={k: str(v) for k, v in fields.items()})


def header_of(data: bytes) -> container.Header:
    return container.read_header(io.BytesIO(data))[0]


def test_encode_defaults_to_24khz_at_6_kbps(client):
    wav = audio_file(2.0, 44100, 2)
    r = encode(client, wav)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content[:4] == b"ECDC"
    assert header_of(r.content) == container.Header("encodec_24khz", 48000, 8)
    h = r.headers
    assert (h["x-model"], h["x-bandwidth-kbps"], h["x-codebooks"], h["x-sample-rate"]) == (
        "encodec-24khz",
        "6",
        "8",
        "24000",
    )
    assert int(h["x-input-bytes"]) == len(wav)
    assert int(h["x-output-bytes"]) == len(r.content)
    pcm16 = 88200 * 2 * 2  # 2 s of 44.1 kHz stereo, 16-bit
    assert float(h["x-compression-ratio"]) == pytest.approx(pcm16 / len(r.content), rel=1e-3)
    assert float(h["x-bitrate-kbps"]) == pytest.approx(len(r.content) * 8 / 2.0 / 1000, rel=1e-3)
    assert float(h["x-compression-ratio"]) >= 10
    assert 'filename="in.ecdc"' in h["content-disposition"]


def test_encoding_is_deterministic_and_raw_bodies_work(client):
    wav = audio_file(1.3, 32000, 1, seed=2)
    a = encode(client, wav, bandwidth_kbps=12)
    b = encode(client, wav, bandwidth_kbps=12)
    c = client.post("/api/encode?bandwidth_kbps=12", content=wav, headers={"content-type": "audio/wav"})
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.content == b.content == c.content


@pytest.mark.parametrize(
    "model,rate,channels,bandwidth",
    [("encodec-24khz", 24000, 1, 1.5), ("encodec-48khz", 48000, 2, 24), ("encodec-32khz", 32000, 1, 2.2)],
)
def test_round_trip_keeps_exact_length(client, model, rate, channels, bandwidth):
    wav = audio_file(1.7, 22050, 1 if channels == 2 else 2)  # other rate and channel count than the model's
    r = encode(client, wav, model=model, bandwidth_kbps=bandwidth)
    assert r.status_code == 200, r.text
    header = header_of(r.content)
    assert header.audio_length == round(1.7 * 22050 * rate / 22050)
    d = decode(client, r.content)
    assert d.status_code == 200, d.text
    audio, sr = sf.read(io.BytesIO(d.content), always_2d=True)
    assert (sr, audio.shape) == (rate, (header.audio_length, channels))
    assert d.headers["x-model"] == model
    assert int(d.headers["x-audio-length"]) == header.audio_length


@pytest.mark.parametrize(
    "name,data",
    [
        ("in.flac", lambda: audio_file(1.0, 48000, 2, "FLAC", "PCM_24")),
        ("in.ogg", lambda: audio_file(1.0, 44100, 2, "OGG", "VORBIS")),
        ("in.mp3", lambda: audio_file(1.0, 44100, 2, "MP3", "MPEG_LAYER_III")),
        ("in.m4a", m4a_file),
        ("in.wav", lambda: audio_file(1.0, 8000, 6, "WAV", "FLOAT")),
    ],
)
def test_any_input_format(client, name, data):
    r = encode(client, data(), name=name)
    assert r.status_code == 200, r.text
    assert header_of(r.content).audio_length > 20000


def test_decode_output_options(client):
    ecdc = encode(client, audio_file(1.0, 24000, 1), model="encodec-24khz", bandwidth_kbps=24).content
    d = decode(client, ecdc, format="flac", sample_rate=44100, bit_depth=24, normalize="peak")
    assert d.status_code == 200, d.text
    assert d.headers["content-type"] == "audio/flac"
    info = sf.info(io.BytesIO(d.content))
    assert (info.samplerate, info.frames, info.subtype) == (44100, 44100, "PCM_24")
    audio, _ = sf.read(io.BytesIO(d.content))
    assert np.max(np.abs(audio)) == pytest.approx(10 ** (-1 / 20), abs=2e-3)
    for fmt, media in (("mp3", "audio/mpeg"), ("ogg", "audio/ogg")):
        d = decode(client, ecdc, format=fmt)
        assert d.status_code == 200 and d.headers["content-type"] == media
    d = decode(client, ecdc, bit_depth=32, normalize="loudness")
    assert d.status_code == 200, d.text
    assert sf.info(io.BytesIO(d.content)).subtype == "FLOAT"


def test_json_codes(client):
    r = encode(client, audio_file(2.5, 48000, 2), model="encodec-48khz", bandwidth_kbps=6, format="json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = json.loads(r.content)
    assert (body["model"], body["frame_rate"], body["num_codebooks"], body["audio_length"]) == (
        "encodec-48khz",
        150.0,
        4,
        120000,
    )
    assert [s["offset"] for s in body["segments"]] == [0, 47520, 95040]
    assert all(len(s["codes"]) == 4 and s["scale"] > 0 for s in body["segments"])
    assert len(body["segments"][0]["codes"][0]) == 150
    assert all(0 <= c < 1024 for s in body["segments"] for row in s["codes"] for c in row)
    # The ratio and bitrate are those of the .ecdc the same codes make.
    ecdc = encode(client, audio_file(2.5, 48000, 2), model="encodec-48khz", bandwidth_kbps=6)
    assert r.headers["x-ecdc-bytes"] == ecdc.headers["x-output-bytes"]


def test_openapi_documents_the_uploads(client):
    doc = client.get("/openapi.json").json()
    for path in ("/api/encode", "/api/decode"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]
        assert "multipart/form-data" in body
    assert "EncodeOptions" in doc["components"]["schemas"]
    assert "X-Compression-Ratio" in doc["paths"]["/api/encode"]["post"]["responses"]["200"]["headers"]


# -- bad input: always a 4xx with a message --------------------------------------------------------


def test_bandwidth_not_offered_lists_valid_values(client):
    r = encode(client, audio_file(0.5), bandwidth_kbps=5)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "bandwidth_kbps" and "1.5, 3, 6, 12, 24" in err["message"]
    r = encode(client, audio_file(0.5), model="encodec-48khz", bandwidth_kbps=1.5)
    assert r.status_code == 422 and "3, 6, 12, 24" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "fields,status,code",
    [
        ({"model": "encodec-96khz"}, 404, "unknown_model"),
        ({"model": "musicgen-small"}, 422, "unsupported"),
        ({"format": "mp3"}, 422, "invalid_field"),
        ({"colour": "blue"}, 422, "invalid_field"),
        ({"bandwidth_kbps": "fast"}, 422, "invalid_field"),
    ],
)
def test_bad_encode_fields(client, fields, status, code):
    r = encode(client, audio_file(0.3), **fields)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "data", [b"", b"not audio at all, just some text" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x00" * 5000]
)
def test_bad_audio_is_422(client, data):
    r = encode(client, data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_audio" and r.json()["error"]["message"]


def test_upload_shapes(client):
    r = client.post("/api/encode", files={"audio": ("a.wav", audio_file(0.3))})
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    r = client.post("/api/encode", json={"model": "encodec-24khz"})
    assert r.status_code == 415


def test_truncated_corrupt_and_foreign_ecdc(client):
    good = encode(client, audio_file(1.0, 48000, 2), model="encodec-48khz").content
    cases = {
        "truncated_ecdc": [good[:-1], good[:-50], good[:20], good[:6]],
        "corrupt_ecdc": [good + b"\x00", good[:9] + b"{" * (len(good) - 9)],
        "not_ecdc": [b"RIFF" + good[4:], b"hello"],
        "empty_upload": [b""],
    }
    for code, bodies in cases.items():
        for body in bodies:
            r = decode(client, body)
            assert r.status_code == 422, (code, r.text)
            assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    meta = json.dumps({"m": "encodec_96khz", "al": 100, "nc": 2, "lm": False}).encode()
    r = decode(client, b"ECDC\x00" + len(meta).to_bytes(4, "big") + meta + b"\x00" * 10)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "unknown_codec_model" and "encodec_96khz" in err["message"]


def test_bad_decode_options(client):
    ecdc = encode(client, audio_file(0.5)).content
    r = decode(client, ecdc, format="flac", bit_depth=32)
    assert r.status_code == 422
    r = decode(client, ecdc, sample_rate=1000)
    assert r.status_code == 422 and r.json()["error"]["field"] == "sample_rate"


def test_upload_over_the_limit_is_413(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, max_upload_mb=0.05) as c:
        big = audio_file(2.0, 44100, 2)  # ~350 KB
        assert encode(c, big).status_code == 413
        r = c.post("/api/encode", content=big, headers={"content-type": "audio/wav"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks():  # no content-length: the limit holds while reading
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        assert (
            c.post("/api/decode", content=chunks(), headers={"content-type": "application/octet-stream"}).status_code
            == 413
        )
        assert c.get("/health").status_code == 200


def test_codec_model_not_installed_is_409(tiny_hub, tmp_path):
    from server.tiny.write import write_tiny_models

    write_tiny_models(tmp_path / "hub", names=["encodec-24khz"])
    with make_client(tmp_path / "hub", tmp_path) as c:
        r = encode(c, audio_file(0.3), model="encodec-48khz")
        assert r.status_code == 409 and r.json()["error"]["code"] == "model_not_installed"
        ecdc = encode(c, audio_file(0.3)).content
        assert decode(c, ecdc).status_code == 200


@pytest.mark.parametrize(
    "model,rate,channels,bandwidth",
    [("encodec-24khz", 24000, 1, 24), ("encodec-48khz", 48000, 2, 24), ("encodec-32khz", 32000, 1, 2.2)],
)
def test_at_least_10_to_1_at_the_top_bandwidth(client, model, rate, channels, bandwidth):
    """The PRD's bar, at each model's highest bitrate, on input at the model's own rate and channels.

    The size depends only on the framing (length, codebooks, bits), which the tiny models share with
    the released ones.
    """
    r = encode(client, audio_file(3.0, rate, channels), model=model, bandwidth_kbps=bandwidth)
    assert r.status_code == 200, r.text
    ratio = float(r.headers["x-compression-ratio"])
    assert ratio == pytest.approx(3.0 * rate * channels * 2 / len(r.content), rel=1e-3)
    assert ratio >= 10


def test_the_answers_headers_are_the_ones_the_openapi_document_lists(client):
    """One table (lib/schemas ENCODE_INFO / DECODE_INFO) gives both."""
    doc = client.get("/openapi.json").json()["paths"]
    r = encode(client, audio_file(0.5))
    d = decode(client, r.content)
    for answer, path in ((r, "/api/encode"), (d, "/api/decode")):
        listed = {h.lower() for h in doc[path]["post"]["responses"]["200"]["headers"]}
        sent = {h for h in answer.headers if h.startswith("x-")}
        assert sent == listed, path


def test_a_codec_request_is_a_job_like_any_other(client):
    r = encode(client, audio_file(0.5))
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    assert (job["kind"], job["state"], job["model"]) == ("encode", "succeeded", "encodec-24khz")
    assert job["result"]["info"]["codebooks"] == r.headers["x-codebooks"]
    again = client.get(f"/api/jobs/{job['id']}/audio")
    assert again.status_code == 200 and again.content == r.content
    kinds = {j["kind"] for j in client.get("/api/jobs?limit=1000").json()["jobs"]}
    assert {"encode", "decode"} & kinds


def test_a_codec_job_holds_a_lease_on_its_model_while_it_runs(client, monkeypatch):
    """So the memory budget never unloads the codec under it (the old route held none)."""
    from server.jobs.lanes import codec as lane

    registry = client.app.state.services.registry
    seen = []
    real = lane.encode_file

    def watched(codec, *args, **kwargs):
        seen.append(registry.in_use(codec.spec.name))
        return real(codec, *args, **kwargs)

    monkeypatch.setattr(lane, "encode_file", watched)
    assert encode(client, audio_file(0.3)).status_code == 200
    assert seen == [1] and registry.in_use("encodec-24khz") == 0
