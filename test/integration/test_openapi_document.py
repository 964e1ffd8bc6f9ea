"""The OpenAPI document states what this server accepts and answers (issue 16, "The OpenAPI document
matches the server"): each case sends the request and checks the document against the answer."""

from __future__ import annotations

import base64
import io

import jsonschema_rs
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from api_client import make_client, wait_job

from lib.schemas import MusicRequest

LIMITS = {"max_duration_s": 7.0, "max_prompt_chars": 40}


@pytest.fixture(scope="module")
def served(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("openapi"), auto_download=False, **LIMITS) as client:
        yield client, client.get("/openapi.json").json()


def _body_schema(doc: dict, path: str, media_type: str) -> dict:
    schema = doc["paths"][path]["post"]["requestBody"]["content"][media_type]["schema"]
    return {**schema, "components": doc["components"]}


def _valid(schema: dict, value) -> bool:
    return jsonschema_rs.Draft202012Validator(schema).is_valid(value)


def _param(doc: dict, path: str, name: str, method: str = "get") -> dict:
    return next(p for p in doc["paths"][path][method]["parameters"] if p["name"] == name)


def _conforms(doc: dict, path: str, method: str, response) -> None:
    schemathesis.openapi.from_dict(doc)[path][method].validate_response(response)


def test_duration_and_prompt_have_the_configured_limits(served):
    client, doc = served
    for name in ("MusicRequest", "SoundRequest", "MelodyRequest", "ContinuationRequest", "MusicJob"):
        props = doc["components"]["schemas"][name]["properties"]
        assert props["duration"]["maximum"] == 7.0 and props["prompt"]["maxLength"] == 40, name
    schema = _body_schema(doc, "/api/generate/music", "application/json")
    assert not _valid(schema, {"prompt": "drums", "duration": 8})
    r = client.post("/api/generate/music", json={"prompt": "drums", "duration": 8})
    assert r.status_code == 422 and r.json()["error"]["field"] == "duration"
    assert not _valid(schema, {"prompt": "x" * 41}) and not _valid(schema, {"prompt": "   "})
    assert client.post("/api/generate/music", json={"prompt": "x" * 41}).status_code == 422
    assert client.post("/api/generate/music", json={"prompt": "   "}).status_code == 422


def test_the_default_duration_stays_within_the_limit(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, auto_download=False, max_duration_s=0.5) as client:
        props = client.get("/openapi.json").json()["components"]["schemas"]["MusicRequest"]["properties"]
        assert props["duration"]["default"] == 0.5
        r = client.post("/api/generate/music", json={"prompt": "drums", "sample_rate": "native"})
        assert r.status_code == 200 and float(r.headers["x-duration-s"]) == pytest.approx(0.5, abs=0.05)
    assert MusicRequest.model_validate({"prompt": "drums"}).duration == 10.0  # no context: the default


@pytest.mark.parametrize("kind,field", [("melody", "melody"), ("continuation", "audio")])
def test_the_input_audio_is_required_in_json_and_in_forms(served, kind, field):
    client, doc = served
    path = f"/api/generate/{kind}"
    for media_type in ("application/json", "multipart/form-data"):
        schema = _body_schema(doc, path, media_type)
        assert not _valid(schema, {"prompt": "drums"}), media_type
        assert _valid(schema, {"prompt": "drums", f"{field}_job": "abc"}), media_type
        assert not _valid(schema, {f"{field}_job": "abc", f"{field}_content": "x"}), media_type  # exactly one
    assert _valid(_body_schema(doc, path, "application/json"), {field: "UklGRg=="})
    assert not _valid(_body_schema(doc, path, "application/json"), {field: "not base64!"})
    r = client.post(path, json={"prompt": "drums"})
    assert r.status_code == 422 and r.json()["error"]["field"] == field
    r = client.post(path, data={"prompt": "drums"}, files={"other": ("a.wav", b"x")})
    assert r.status_code == 422


def test_query_parameters_are_typed_and_empty_values_are_outside_them(served):
    client, doc = served
    limit = _param(doc, "/api/jobs", "limit")["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 1000)
    assert not _valid(limit, "") and not _valid(limit, 0) and _valid(limit, 50)
    assert _param(doc, "/api/jobs", "state")["schema"]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    for query in ("limit=", "limit=0", "limit=1001", "offset=-1", "limit=²", "state=done", "limit=" + "9" * 50):
        r = client.get(f"/api/jobs?{query}")
        assert r.status_code == 422, query
        _conforms(doc, "/api/jobs", "get", r)
    assert client.get("/api/jobs?limit=1000&offset=0&state=failed").status_code == 200
    bit_depth = _param(doc, "/api/jobs/{job_id}/audio", "bit_depth")["schema"]
    assert bit_depth["enum"] == [16, 24, 32] and "default" not in bit_depth  # absent: the job's own
    assert not _valid(bit_depth, "")
    rate = _param(doc, "/api/jobs/{job_id}/audio", "sample_rate")["schema"]
    assert _valid(rate, "native") and _valid(rate, 8000) and not _valid(rate, 7999) and not _valid(rate, "")


def test_api_jobs_advertises_json_only(served):
    client, doc = served
    assert set(doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]) == {"application/json"}
    r = client.post("/api/jobs", data={"prompt": "drums"}, files={"x": ("a", b"b")})
    assert 400 <= r.status_code < 500


@pytest.mark.parametrize("path,options", [("/api/encode", {"model": "encodec-24khz"}), ("/api/decode", {})])
def test_the_codec_form_has_a_valid_body(served, path, options):
    _, doc = served
    form = _body_schema(doc, path, "multipart/form-data")
    assert _valid(form, {"file": "<the upload>", **options})
    assert not _valid(form, options)  # the file is required
    assert not _valid(form, {"file": "x", "stray": "1"})  # and nothing else
    names = {p["name"] for p in doc["paths"][path]["post"]["parameters"]}
    fields = doc["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"]
    assert names == set(fields) - {"file"}  # the raw body's options: query parameters


def test_the_codec_bandwidths_follow_the_model(served):
    _, doc = served
    form = _body_schema(doc, "/api/encode", "multipart/form-data")
    assert _valid(form, {"file": "x", "bandwidth_kbps": 6})  # the default model's
    assert not _valid(form, {"file": "x", "bandwidth_kbps": 2.2})
    assert _valid(form, {"file": "x", "model": "encodec-32khz", "bandwidth_kbps": 2.2})
    assert not _valid(form, {"file": "x", "model": "encodec-48khz", "bandwidth_kbps": 1.5})


def test_output_rules_are_in_the_document(served):
    client, doc = served
    schema = _body_schema(doc, "/api/generate/music", "application/json")
    assert not _valid(schema, {"prompt": "x", "format": "flac", "bit_depth": 32})
    assert _valid(schema, {"prompt": "x", "format": "flac", "bit_depth": 24})
    assert not _valid(schema, {"prompt": "x", "format": "mp3", "sample_rate": 96000})
    assert _valid(schema, {"prompt": "x", "format": "mp3", "sample_rate": "native"})
    assert not _valid(schema, {"prompt": "x", "sample_rate": 7999})
    assert not _valid(schema, {"prompt": "x", "model": "encodec-24khz"})  # models that make music only
    for body in ({"format": "flac", "bit_depth": 32}, {"format": "mp3", "sample_rate": 96000}, {"sample_rate": 7999}):
        assert client.post("/api/generate/music", json={"prompt": "x", **body}).status_code == 422


def test_json_booleans_and_numbers_stay_apart(served):
    client, doc = served
    schema = _body_schema(doc, "/api/generate/music", "application/json")
    for body in ({"async": 0}, {"async": 1.0}, {"top_k": True}, {"duration": False}):
        assert not _valid(schema, {"prompt": "x", **body})
        r = client.post("/api/generate/music", json={"prompt": "x", **body})
        assert r.status_code == 422 and r.json()["error"]["field"] == next(iter(body)), body
    r = client.post("/api/generate/music", data={"prompt": "x", "async": "true", "duration": "0.1"})
    assert r.status_code == 202  # form fields are strings: "true" is true


def test_async_answers_are_documented(served):
    client, doc = served
    r = client.post("/api/generate/music", json={"prompt": "drums", "duration": 0.2, "async": True})
    assert r.status_code == 202
    _conforms(doc, "/api/generate/music", "post", r)
    job = wait_job(client, r.json()["job"]["id"])
    events = client.get(f"/api/jobs/{job['id']}/events")
    _conforms(doc, "/api/jobs/{job_id}/events", "get", events)


def test_the_audio_of_a_job_that_failed_is_a_documented_409(tmp_path):
    with make_client(tmp_path / "models", tmp_path) as client:
        doc = client.get("/openapi.json").json()
        r = client.post("/api/models/musicgen-small/download")  # offline (test/conftest.py): it fails
        assert r.status_code == 202
        _conforms(doc, "/api/models/{name}/download", "post", r)
        job = wait_job(client, r.json()["job"]["id"])
        assert job["state"] == "failed" and job["error"]["status"] >= 500
        audio = client.get(f"/api/jobs/{job['id']}/audio")
        assert audio.status_code == 409 and audio.json()["error"]["code"] == job["error"]["code"]
        _conforms(doc, "/api/jobs/{job_id}/audio", "get", audio)


def test_an_installed_models_download_is_a_documented_200(served):
    client, doc = served
    r = client.post("/api/models/musicgen-small/download")
    assert r.status_code == 200 and r.json()["installed"] is True
    _conforms(doc, "/api/models/{name}/download", "post", r)


@pytest.mark.parametrize("path", ["/api/encode", "/api/decode"])
def test_a_json_body_to_the_codec_is_a_documented_415(served, path):
    client, doc = served
    r = client.post(path, json={"model": "encodec-24khz"})
    assert r.status_code == 415
    _conforms(doc, path, "post", r)
    assert "415" in doc["paths"]["/api/generate/music"]["post"]["responses"]  # every route with a body


def test_with_a_key_every_api_route_documents_401(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, api_key="s3cret") as client:
        doc = client.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                assert ("401" in op["responses"]) == path.startswith("/api/"), (method, path)
        r = client.get("/api/jobs")
        assert r.status_code == 401
        _conforms(doc, "/api/jobs", "get", r)
    with make_client(tiny_hub, tmp_path / "open") as client:
        assert "401" not in client.get("/openapi.json").json()["paths"]["/api/jobs"]["get"]["responses"]


def test_a_method_a_path_lacks_is_a_405_that_names_the_others(served):
    client, _ = served
    r = client.request("PUT", "/api/models/musicgen-small")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_the_generation_headers_are_the_ones_the_document_lists(served):
    client, doc = served
    r = client.post("/api/generate/music", json={"prompt": "drums", "duration": 0.2})
    listed = {h.lower() for h in doc["paths"]["/api/generate/music"]["post"]["responses"]["200"]["headers"]}
    # The 200 is the audio, or with "stream" the audio as it is made: the document lists both's headers.
    streamed = client.post("/api/generate/music", json={"prompt": "drums", "duration": 0.2, "stream": True})
    headers = [{h for h in answer.headers if h.startswith("x-")} for answer in (r, streamed)]
    assert headers[0] | headers[1] == listed and "x-generation-time-s" not in headers[1]
    _conforms(doc, "/api/generate/music", "post", r)
    _conforms(doc, "/api/generate/music", "post", streamed)
    assert io.BytesIO(r.content).read(4) == b"RIFF"


def test_the_mix_document_states_its_rules_and_answers(served):
    client, doc = served
    schema = _body_schema(doc, "/api/mix", "application/json")
    wav = io.BytesIO()
    sf.write(wav, np.zeros(800, dtype=np.float32), 8000, format="WAV")
    track = {"audio_base64": base64.b64encode(wav.getvalue()).decode()}
    assert _valid(schema, {"tracks": [track]})
    assert not _valid(schema, {"tracks": []}) and not _valid(schema, {"tracks": [{"offset_s": 1}]})  # no audio
    assert not _valid(schema, {"tracks": [{**track, "job": "abc"}]})  # two sources
    assert not _valid(schema, {"tracks": [{**track, "offset_s": -1}]})
    assert not _valid(schema, {"tracks": [track] * 17})  # the server's max_mix_tracks (16)
    assert not _valid(schema, {"tracks": [track], "duration_s": 601})  # its max_mix_duration_s
    for body in ({"tracks": []}, {"tracks": [{"offset_s": 1}]}, {"tracks": [track], "duration_s": 601}):
        r = client.post("/api/mix", json=body)
        assert r.status_code == 422
        _conforms(doc, "/api/mix", "post", r)
    multipart = doc["paths"]["/api/mix"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert multipart["encoding"]["tracks"] == {"contentType": "application/json"}
    form = _body_schema(doc, "/api/mix", "multipart/form-data")
    assert _valid(form, {"tracks": [{"upload": "a"}], "a": "<the file>"})
    r = client.post("/api/mix", json={"tracks": [track]})
    assert r.status_code == 200 and r.headers["x-job-id"]
    _conforms(doc, "/api/mix", "post", r)
    accepted = client.post("/api/mix", json={"tracks": [track], "async": True})
    assert accepted.status_code == 202
    _conforms(doc, "/api/mix", "post", accepted)


def test_the_watermark_detection_document_states_its_rules_and_answers(served):
    client, doc = served
    schema = _body_schema(doc, "/api/watermark/detect", "application/json")
    wav = io.BytesIO()
    sf.write(wav, 0.1 * np.ones(1600, dtype=np.float32), 16000, format="WAV")
    audio = base64.b64encode(wav.getvalue()).decode()
    assert _valid(schema, {"audio": audio}) and _valid(schema, {"audio_job": "abc", "model": "audioseal"})
    assert not _valid(schema, {}) and not _valid(schema, {"audio": audio, "audio_job": "abc"})
    assert not _valid(schema, {"audio_job": "abc", "model": "musicgen-small"})
    form = _body_schema(doc, "/api/watermark/detect", "multipart/form-data")
    assert _valid(form, {"audio": "<the file>"})
    for body in ({}, {"audio": "@@"}, {"audio": audio, "audio_job": "abc"}):
        r = client.post("/api/watermark/detect", json=body)
        assert r.status_code == 422
        _conforms(doc, "/api/watermark/detect", "post", r)
    r = client.post("/api/watermark/detect", json={"audio": audio})
    assert r.status_code == 200 and r.headers["x-job-id"]
    _conforms(doc, "/api/watermark/detect", "post", r)
    accepted = client.post("/api/watermark/detect", json={"audio": audio, "async": True})
    assert accepted.status_code == 202
    _conforms(doc, "/api/watermark/detect", "post", accepted)
