"""Hostile and careless input, sent as a client would send it, on every endpoint it applies to: each
is a 4xx that says what is wrong, never a 500 (issue 16, "Classes that gave a 500" and "Wrong
answers that are not 500s")."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client

# Every endpoint that reads a JSON body.
JSON_ENDPOINTS = [
    "/api/generate/music",
    "/api/generate/sound",
    "/api/generate/melody",
    "/api/generate/continuation",
    "/api/jobs",
]
UPLOAD_ENDPOINTS = ["/api/encode", "/api/decode"]
NATIVE = {"sample_rate": "native", "normalize": "none"}


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("hostile"), max_duration_s=5) as c:
        yield c


@pytest.fixture(scope="module")
def finished_job(client) -> str:
    r = client.post("/api/generate/music", json={"prompt": "x", "duration": 0.2, **NATIVE})
    assert r.status_code == 200, r.text
    return r.headers["x-job-id"]


def wav(seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    frames = np.stack([0.3 * np.sin(2 * np.pi * 440 * (1 + c / 10) * t) for c in range(channels)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, frames.astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def ecdc(client) -> bytes:
    r = client.post("/api/encode", files={"file": ("in.wav", wav(0.5))})
    assert r.status_code == 200, r.text
    return r.content


def refused(r, status: int, code: str | None = None, field: str | None = None) -> dict:
    """The answer is `status` with an error that says what is wrong."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["message"], err
    if code:
        assert err["code"] == code, err
    if field:
        assert err.get("field") == field, err
    return err


def post_json(client, path: str, raw: bytes, **headers: str):
    return client.post(path, content=raw, headers={"content-type": "application/json", **headers})


def body_for(path: str, **fields) -> dict:
    """A request for `path` that is valid but for `fields` (the melody and audio are inputs there)."""
    base: dict = {"prompt": "x", "duration": 0.2}
    if path.endswith("melody") or path == "/api/jobs":
        base |= {"melody": base64.b64encode(wav(0.5)).decode()}
        if path == "/api/jobs":
            base["kind"] = "melody"
    elif path.endswith("continuation"):
        base |= {"audio": base64.b64encode(wav(0.5)).decode()}
    return base | fields


# -- the body is not a JSON document we can read: 400 ---------------------------------------------


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="arrays-100k-deep"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="objects-50k-deep"),
        pytest.param(b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", id="5000-digit-seed"),
        pytest.param(b'{"prompt": "caf\xe9", "duration": 1}', id="latin-1-not-utf-8"),
        pytest.param(b'{"prompt": "x"}\xff\xfe', id="garbage-after-the-document"),
        pytest.param(b'{"prompt": "x", "model": "\\ud800"}', id="lone-surrogate-in-model"),
        pytest.param(b'{"prompt": "x", "kind": "melody", "melody_job": "\\udfff"}', id="lone-surrogate-melody_job"),
    ],
)
def test_unreadable_json_is_400(client, path, raw):
    err = refused(post_json(client, path, raw), 400)
    assert err["code"] in ("invalid_json", "bad_request")


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_an_integer_too_large_for_seed_is_422_naming_it(client, path):
    r = post_json(client, path, json.dumps(body_for(path, seed=10**100)).encode())
    refused(r, 422, field="seed")


def test_a_surrogate_pair_is_a_character_not_an_error(client):
    r = client.post("/api/generate/music", json={"prompt": "\U0001f3b5 and a harp", "duration": 0.2, **NATIVE})
    assert r.status_code == 200, r.text


# -- numbers at the edge ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "raw_value,field",
    [("1e309", "duration"), ("-1e309", "temperature"), ("NaN", "top_p"), ("Infinity", "cfg_coef")],
)
def test_non_finite_numbers_are_422_naming_the_field(client, path, raw_value, field):
    body = json.dumps(body_for(path, **{field: "PLACEHOLDER"})).replace('"PLACEHOLDER"', raw_value)
    refused(post_json(client, path, body.encode()), 422, field=field)


@pytest.mark.parametrize("path", ["/api/generate/melody", "/api/jobs"])
@pytest.mark.parametrize("field", ["melody_start", "melody_end"])
def test_melody_trims_at_infinity_are_422(client, path, field):
    body = json.dumps(body_for(path, **{field: "PLACEHOLDER"})).replace('"PLACEHOLDER"', "1e309")
    refused(post_json(client, path, body.encode()), 422, field=field)


@pytest.mark.parametrize("path", ["/api/generate/melody", "/api/jobs"])
def test_melody_start_at_1e308_is_past_the_melody(client, path):
    err = refused(client.post(path, json=body_for(path, melody_start=1e308)), 422, field="melody_start")
    assert "long" in err["message"]


def test_melody_end_at_1e308_is_the_end_of_the_melody(client):
    r = client.post("/api/generate/melody", json=body_for("/api/generate/melody", melody_end=1e308, **NATIVE))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/api/generate/melody", "/api/generate/continuation"])
def test_1e308_in_a_form_field(client, path):
    field = "melody" if path.endswith("melody") else "audio"
    extra = {"melody_start": "1e308"} if field == "melody" else {"duration": "1e308"}
    r = client.post(path, data={"duration": "0.2", **extra}, files={field: ("in.wav", wav(0.5))})
    refused(r, 422, field=next(iter(extra)))


# -- compressed bodies: 415, nothing inflated -----------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ENDPOINTS + UPLOAD_ENDPOINTS)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: gzip.compress(json.dumps({"prompt": "x", "duration": 0.2}).encode()), id="gzip"),
        pytest.param(lambda: gzip.compress(b" " * 50_000_000, compresslevel=9), id="gzip-bomb-50MB"),
    ],
)
def test_compressed_bodies_are_415(client, path, data):
    ctype = "application/json" if path in JSON_ENDPOINTS else "application/octet-stream"
    r = client.post(path, content=data(), headers={"content-type": ctype, "content-encoding": "gzip"})
    err = refused(r, 415, code="unsupported_content_encoding")
    assert "Content-Encoding" in err["hint"]


def test_identity_encoding_is_no_encoding(client):
    r = client.post(
        "/api/generate/music",
        json={"prompt": "x", "duration": 0.2, **NATIVE},
        headers={"content-encoding": "identity"},
    )
    assert r.status_code == 200, r.text


# -- query parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=" + "9" * 5000, "limit"),
        ("limit=99999999999999999999999999999999999", "limit"),
        ("limit=²", "limit"),
        ("offset=²", "offset"),
        ("offset=" + "9" * 5000, "offset"),
        ("limit=%EF%BC%91", "limit"),  # a fullwidth digit one
        ("limit=", "limit"),
        ("state=%ED%A0%80", "state"),  # a surrogate, UTF-8-encoded as no valid UTF-8 is
    ],
)
def test_job_list_query_is_422(client, query, field):
    refused(client.get(f"/api/jobs?{query}"), 422, field=field)


@pytest.mark.parametrize(
    "query,field",
    [
        ("bit_depth=²", "bit_depth"),
        ("bit_depth=" + "9" * 5000, "bit_depth"),
        ("sample_rate=²", "sample_rate"),
        ("sample_rate=" + "9" * 5000, "sample_rate"),
        ("sample_rate=1e308", "sample_rate"),
    ],
)
def test_audio_query_is_422(client, finished_job, query, field):
    err = refused(client.get(f"/api/jobs/{finished_job}/audio?{query}"), 422)
    assert err["field"].startswith(field)


@pytest.mark.parametrize(
    "query,field",
    [("bit_depth=²", "bit_depth"), ("sample_rate=²", "sample_rate"), ("sample_rate=" + "9" * 5000, "sample_rate")],
)
def test_decode_query_is_422(client, ecdc, query, field):
    r = client.post(f"/api/decode?{query}", content=ecdc, headers={"content-type": "application/octet-stream"})
    assert refused(r, 422)["field"].startswith(field)


# -- form fields and query strings mean what JSON means ---------------------------------------------------


def subtype(r) -> str:
    assert r.status_code == 200, r.text
    return sf.info(io.BytesIO(r.content)).subtype


def test_bit_depth_as_a_form_field_on_generation(client):
    r = client.post("/api/generate/music", data={"prompt": "x", "duration": "0.2", "bit_depth": "24", **NATIVE})
    assert subtype(r) == "PCM_24"
    r = client.post(
        "/api/generate/melody",
        data={"duration": "0.2", "bit_depth": "32", **NATIVE},
        files={"melody": ("m.wav", wav(0.5))},
    )
    assert subtype(r) == "FLOAT"


def test_bit_depth_as_a_form_field_and_query_on_decode(client, ecdc):
    assert subtype(client.post("/api/decode", files={"file": ("a.ecdc", ecdc)}, data={"bit_depth": "24"})) == "PCM_24"
    r = client.post("/api/decode?bit_depth=32", content=ecdc, headers={"content-type": "application/octet-stream"})
    assert subtype(r) == "FLOAT"


def test_bit_depth_in_the_audio_query(client, finished_job):
    assert subtype(client.get(f"/api/jobs/{finished_job}/audio?bit_depth=24")) == "PCM_24"
    r = client.get(f"/api/jobs/{finished_job}/audio?sample_rate=48000&bit_depth=32&format=wav")
    assert subtype(r) == "FLOAT" and sf.info(io.BytesIO(r.content)).samplerate == 48000
    refused(client.get(f"/api/jobs/{finished_job}/audio?bit_depth=20"), 422, field="bit_depth")


def test_form_booleans_and_numbers(client):
    r = client.post("/api/generate/music", data={"prompt": "x", "duration": "0.2", "async": "true", "seed": "7"})
    assert r.status_code == 202, r.text
    assert r.json()["job"]["seed"] == 7


# -- file names that are not ASCII -------------------------------------------------------------------------


def disposition_name(r) -> str:
    """The file name a browser or `curl -J` takes from Content-Disposition (RFC 6266, RFC 5987)."""
    value = r.headers["content-disposition"]
    value.encode("ascii")  # a header value is ASCII
    assert value.startswith("attachment;")
    params = dict(p.strip().split("=", 1) for p in value.split(";")[1:])
    if "filename*" in params:
        charset, _, quoted = params["filename*"].partition("''")
        assert charset.lower() == "utf-8"
        return unquote(quoted)
    return params["filename"].strip('"')


@pytest.mark.parametrize(
    "name,stem",
    [("音楽.wav", "音楽"), ("Ünïcödé song.flac", "Ünïcödé_song"), ("x;y z.wav", "x_y_z"), ("😀.wav", "_")],
)
def test_non_ascii_upload_names_on_encode_and_decode(client, name, stem):
    r = client.post("/api/encode", files={"file": (name, wav(0.5))})
    assert r.status_code == 200, r.text
    assert disposition_name(r) == f"{stem}.ecdc"
    d = client.post("/api/decode", files={"file": (f"{stem}.ecdc", r.content)})
    assert d.status_code == 200, d.text
    assert disposition_name(d) == f"{stem}.wav"


def test_a_bad_file_with_a_non_ascii_name_is_a_422_quoting_it(client):
    err = refused(client.post("/api/encode", files={"file": ("音楽.wav", b"not audio at all")}), 422)
    assert "音楽.wav" in err["message"]


# -- .ecdc headers ----------------------------------------------------------------------------------------


def ecdc_with(header: bytes, body: bytes = b"") -> bytes:
    return b"ECDC" + struct.pack("!BI", 0, len(header)) + header + body


@pytest.mark.parametrize(
    "header,code",
    [
        (b'{"m": "\\ud800", "al": 100, "nc": 2, "lm": false}', "corrupt_ecdc"),
        (b'{"m": "\xed\xa0\x80", "al": 100, "nc": 2, "lm": false}', "corrupt_ecdc"),  # CESU-8, not UTF-8
        ('{"m": "音楽", "al": 100, "nc": 2, "lm": false}'.encode(), "unknown_codec_model"),
        (b'{"m": "encodec_24khz", "al": ' + b"9" * 4000 + b', "nc": 2, "lm": false}', "corrupt_ecdc"),
        (b'{"m": "encodec_24khz", "al": 1e309, "nc": 2, "lm": false}', "corrupt_ecdc"),
        (b'{"m": "encodec_24khz", "al": 100, "nc": ' + b"9" * 400 + b', "lm": false}', "corrupt_ecdc"),
        (b'{"m": ' + b"[" * 10_000 + b"]" * 10_000 + b', "al": 1, "nc": 1}', "corrupt_ecdc"),
    ],
)
def test_hostile_ecdc_headers_are_422(client, header, code):
    r = client.post("/api/decode", files={"file": ("x.ecdc", ecdc_with(header, b"\0" * 16))})
    refused(r, 422, code=code)


# -- one channel rule for every input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,field",
    [("/api/encode", "file"), ("/api/generate/melody", "melody"), ("/api/generate/continuation", "audio")],
)
def test_one_channel_rule_everywhere(client, path, field):
    data = {"duration": "0.2", **NATIVE} if field != "file" else {}
    six = client.post(path, data=data, files={field: ("six.wav", wav(0.5, 16000, 6))})
    assert six.status_code == 200, six.text
    eight = client.post(path, data=data, files={field: ("eight.wav", wav(0.5, 16000, 8))})
    err = refused(eight, 422, code="invalid_audio")
    assert "8 channels; at most 6" in err["message"]


def test_the_service_is_still_well(client):
    assert client.get("/health").json()["status"] == "ok"


def test_an_error_quoting_text_utf_8_cannot_carry_still_answers():
    """Parsers refuse lone surrogates, and the one answer function writes JSON in ASCII besides: a
    message quoting such text (from anywhere) stays a 4xx instead of failing to encode."""
    from lib.errors import Invalid
    from server.http.errors import to_response

    r = to_response(Invalid("unknown model '\ud800'", field="model"))
    assert r.status_code == 422
    assert json.loads(r.body)["error"]["message"] == "unknown model '\ud800'"


def test_strings_are_typed_by_the_schema_not_by_field_names():
    from typing import Literal

    from pydantic import BaseModel

    from server.http.payload import from_strings

    class Toy(BaseModel):
        depth: Literal[8, 16] = 8
        flag: Literal[True] | None = None
        name: Literal["a"] | int = 1

    got = from_strings(Toy, {"depth": " 16", "flag": "true", "name": "a", "other": "16"})
    assert got == {"depth": 16, "flag": True, "name": "a", "other": "16"}
    assert from_strings(Toy, {"depth": "²"}) == {"depth": "²"}  # left for the schema to refuse


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b"prompt=caf%E9&duration=0.2&model=%FF%FE", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\ncaf\xe9\r\n'
            b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n\xff\xfe\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
    ids=["urlencoded", "multipart"],
)
def test_form_fields_that_are_not_utf_8_are_4xx(client, body, ctype):
    r = client.post("/api/generate/music", content=body, headers={"content-type": ctype})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["field"] == "model"


@pytest.mark.parametrize(
    "body",
    [b"--b\r\nno headers at all\r\n--b--\r\n", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"],
    ids=["garbage", "part-without-a-name"],
)
@pytest.mark.parametrize("path", ["/api/generate/melody", "/api/encode"])
def test_broken_multipart_is_400(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    refused(r, 400, code="invalid_form")
