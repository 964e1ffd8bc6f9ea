"""Limits that cannot be walked around (issue 16): the body limit holds for chunked bodies of every
kind, the decode output is bounded before any work, and an .ecdc header's claims are checked against
the body it came with."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client
from server_process import ServerProcess
from waiting import QUICK_HANG_GUARD_S

LIMIT_MB = 0.05  # 50 kB
BOUNDARY = "limits-boundary"


@pytest.fixture(scope="module")
def small(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("limits"), max_upload_mb=LIMIT_MB, max_duration_s=30) as c:
        yield c


def wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    frames = np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * channels, axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, frames, rate, format="WAV")
    return buf.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as any client writes it, and its content type."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, (filename, data) in files.items():
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}"


def chunked(data: bytes, size: int = 8192):
    """A body without Content-Length: httpx sends a generator with Transfer-Encoding: chunked."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def too_large(r) -> None:
    assert r.status_code == 413, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "payload_too_large"


# -- the body limit counts bytes, not declarations ----------------------------------------------------


UPLOADS = [
    ("/api/generate/melody", "melody", {"duration": "0.2"}),
    ("/api/generate/continuation", "audio", {"duration": "0.2"}),
    ("/api/encode", "file", {}),
    ("/api/decode", "file", {}),
]


@pytest.mark.parametrize("path,field,fields", UPLOADS)
def test_a_chunked_multipart_upload_over_the_limit_is_413(small, path, field, fields):
    body, ctype = multipart(fields, {field: ("big.wav", wav(3.0))})  # a valid 96 kB WAV
    too_large(small.post(path, content=chunked(body), headers={"content-type": ctype}))


@pytest.mark.parametrize("path,field,fields", UPLOADS[:3])
def test_a_chunked_multipart_upload_under_the_limit_is_read(small, path, field, fields):
    body, ctype = multipart({**fields, "sample_rate": "native"} if fields else {}, {field: ("in.wav", wav(0.5))})
    r = small.post(path, content=chunked(body, 1000), headers={"content-type": ctype})
    assert r.status_code == 200, r.text


def test_a_form_field_counts_like_a_file(small):
    body, ctype = multipart({"prompt": "x" * 60_000, "duration": "0.2"}, {})
    too_large(small.post("/api/generate/music", content=chunked(body), headers={"content-type": ctype}))


@pytest.mark.parametrize("path", ["/api/generate/music", "/api/jobs"])
def test_a_chunked_json_body_over_the_limit_is_413(small, path):
    body = json.dumps({"prompt": "x" * 60_000}).encode()
    too_large(small.post(path, content=chunked(body), headers={"content-type": "application/json"}))


def test_a_chunked_urlencoded_form_over_the_limit_is_413(small):
    body = b"duration=0.2&prompt=" + b"x" * 60_000
    r = small.post(
        "/api/generate/music", content=chunked(body), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    too_large(r)


def test_a_raw_upload_that_lies_about_its_length_is_413(small):
    """Content-Length says 10 bytes; the ASGI server passes what comes, and the bytes are counted."""
    r = small.post(
        "/api/decode",
        content=chunked(b"ECDC" + b"\0" * 100_000),
        headers={"content-type": "application/octet-stream"},
    )
    too_large(r)


def test_over_the_limit_on_a_real_server_the_client_reads_the_413(tiny_hub, tmp_path):
    """Through uvicorn: the 413 comes while the client is still sending; the rest of the body is
    read and dropped, so the client gets the answer, not a reset connection."""
    server = ServerProcess(tiny_hub, tmp_path / "data", max_upload_mb=1).start()
    try:
        body, ctype = multipart({"duration": "1"}, {"melody": ("long.wav", wav(60.0, 48000, 2))})  # 23 MB
        with server.client(QUICK_HANG_GUARD_S) as c:
            r = c.post("/api/generate/melody", content=chunked(body, 1 << 16), headers={"content-type": ctype})
            too_large(r)
            assert c.get("/health").status_code == 200
    finally:
        server.terminate()


# -- decode output ----------------------------------------------------------------------------------------


def jobs_total(client) -> int:
    return client.get("/api/jobs").json()["total"]


def test_the_decode_output_is_bounded_before_any_work(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, max_decode_samples=48_000) as c:
        one_second = c.post("/api/encode", files={"file": ("a.wav", wav(1.0, 24000))}, data={"model": "encodec-24khz"})
        assert one_second.status_code == 200, one_second.text

        def decode(data: bytes, **query):
            return c.post(
                "/api/decode", params=query, content=data, headers={"content-type": "application/octet-stream"}
            )

        assert decode(one_second.content).status_code == 200  # 24 000 samples
        assert decode(one_second.content, sample_rate=48000).status_code == 200  # 48 000: at the bound
        three_seconds = c.post("/api/encode", files={"file": ("a.wav", wav(3.0, 24000))}).content
        before = jobs_total(c)
        err = decode(one_second.content, sample_rate=192000, bit_depth=32).json()["error"]
        assert err["code"] == "decode_too_large" and err["field"] == "sample_rate"
        assert "AUDIOCRAFT_MAX_DECODE_SAMPLES" in err["hint"]
        r = decode(three_seconds)
        assert r.status_code == 422 and r.json()["error"]["field"] == "file"
        assert jobs_total(c) == before  # refused before a job was made


# -- an .ecdc header's claims ---------------------------------------------------------------------------------


def ecdc_claiming(model: str, audio_length: int, total_bytes: int) -> bytes:
    meta = json.dumps({"m": model, "al": audio_length, "nc": 2, "lm": False}).encode()
    head = b"ECDC" + struct.pack("!BI", 0, len(meta)) + meta
    assert len(head) <= total_bytes
    return head + b"\x01" * (total_bytes - len(head))


CLAIMS = [
    pytest.param("encodec_48khz", 10_000_000 * 47520, 89, id="89-bytes-claiming-10-million-segments"),
    pytest.param("encodec_24khz", 5_700_000_000_000, 77, id="77-bytes-claiming-al-5.7e12"),
]


@pytest.mark.parametrize("model,audio_length,size", CLAIMS)
def test_header_claims_past_the_output_bound_are_refused_before_queueing(small, model, audio_length, size):
    before = jobs_total(small)
    r = small.post("/api/decode", files={"file": ("x.ecdc", ecdc_claiming(model, audio_length, size))})
    assert r.status_code == 422 and r.json()["error"]["code"] == "decode_too_large", r.text
    assert jobs_total(small) == before


@pytest.mark.parametrize("model,audio_length,size", CLAIMS)
def test_header_claims_the_body_cannot_hold_are_refused_at_once(tiny_hub, tmp_path, model, audio_length, size):
    """With no output bound to stop them, the lane checks the claims against the body (O(1), before
    anything is allocated: test_codec.py counts the steps) and refuses them."""
    with make_client(tiny_hub, tmp_path, max_decode_samples=10**16) as c:
        r = c.post("/api/decode", files={"file": ("x.ecdc", ecdc_claiming(model, audio_length, size))})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "truncated_ecdc", err
        assert f"announces {audio_length} samples" in err["message"] and "are there" in err["message"]
        assert c.get(f"/api/jobs/{r.headers['x-job-id']}").json()["state"] == "failed"
