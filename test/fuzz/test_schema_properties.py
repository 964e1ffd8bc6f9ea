"""Properties of the request schemas, with hypothesis: whatever JSON a client sends, a schema either
takes it or raises pydantic's ValidationError, which server/http/errors.to_response turns into a 4xx;
never another exception, never a 5xx. Then the same kind of bodies, forms and query strings go to the
app (on the tiny models), and every answer is below 500 and matches the app's own OpenAPI document.

Deterministic (derandomize): CI runs the same examples every time. HYPOTHESIS_PROFILE=explore draws
new ones, and more of them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from lib.schemas import (
    CONTEXT_SETTINGS,
    ContinuationRequest,
    DecodeOptions,
    EncodeOptions,
    JobItem,
    JobsQuery,
    MelodyRequest,
    MixRequest,
    MixTrack,
    MusicRequest,
    OutputOptions,
    SoundRequest,
)
from server.http.errors import to_response

pytestmark = pytest.mark.fuzz

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The fuzzing config, as the fuzz server has it (test/fuzz/conftest.py).
CONTEXT = {
    "max_duration_s": 1.0,
    "max_prompt_chars": 2000,
    "default_codec_model": "encodec-24khz",
    "max_mix_tracks": 4,
    "max_mix_duration_s": 3.0,
}
assert set(CONTEXT) == set(CONTEXT_SETTINGS)
SCHEMAS: dict[str, Any] = {
    "music": MusicRequest,
    "sound": SoundRequest,
    "melody": MelodyRequest,
    "continuation": ContinuationRequest,
    "job item": TypeAdapter(JobItem),
    "job items": TypeAdapter(list[JobItem]),
    "encode": EncodeOptions,
    "decode": DecodeOptions,
    "output": OutputOptions,
    "jobs query": JobsQuery,
    "mix": MixRequest,
}


def text(surrogates: bool = False) -> st.SearchStrategy[str]:
    """Strings as json.loads gives them: any code point, lone surrogates too when asked (the app's own
    tests leave them to their class's test)."""
    return st.text(st.characters(exclude_categories=() if surrogates else ("Cs",)), max_size=12)


def scalars(surrogates: bool = False) -> st.SearchStrategy[Any]:
    """What json.loads gives for a scalar; Python's json reads NaN, Infinity and 1e309 (inf) too."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(),
        st.sampled_from([0, 1, -1, 0.5, 16, 24, 32, 8000, 44100, 192000, 1e308, 2**63, "native", "wav", "mp3"]),
        text(surrogates),
    )


def json_values(surrogates: bool = False) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(surrogates),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(surrogates), inner, max_size=3),
        max_leaves=8,
    )


GENERATION = (MusicRequest, SoundRequest, MelodyRequest, ContinuationRequest)


def _fields(schema: Any) -> list[str]:
    """The field names a body of `schema` may have (a job item's: any generation's, and kind)."""
    models = [schema] if isinstance(schema, type) else [*GENERATION]
    return sorted({f.alias or n for m in models for n, f in m.model_fields.items()} | {"kind"})


def bodies(schema: Any, surrogates: bool = False) -> st.SearchStrategy[Any]:
    """Objects with the schema's own field names (and stray ones) holding any JSON value, over a start
    that may be valid; lists of them (POST /api/jobs takes one item or a list); any JSON value at all."""
    names = st.sampled_from(_fields(schema)) | text(surrogates)
    start = st.fixed_dictionaries(
        {}, optional={"prompt": st.just("drums"), "kind": st.sampled_from(["music", "sound"])}
    )
    near = st.builds(lambda a, b: {**a, **b}, start, st.dictionaries(names, json_values(surrogates), max_size=6))
    return st.one_of(near, st.lists(near, max_size=3), json_values(surrogates))


def validate(schema: Any, data: Any) -> None:
    if isinstance(schema, TypeAdapter):
        schema.validate_python(data, context=CONTEXT)
    else:
        schema.model_validate(data, context=CONTEXT)


def _holds(schema: Any, data: Any) -> None:
    try:
        validate(schema, data)
    except ValidationError as exc:
        response = to_response(exc)
        assert 400 <= response.status_code < 500, (response.status_code, response.body)
        assert json.loads(response.body)["error"]["message"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_schema_takes_json_or_refuses_it_with_a_4xx(name):
    schema = SCHEMAS[name]

    @given(bodies(schema, surrogates=True))
    @settings(max_examples=300)
    def check(data):
        _holds(schema, data)

    check()


# -- the app ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tiny_hub, tmp_path_factory):
    """The app on the tiny models with the fuzzing config, its document, and a finished job."""
    from api_client import make_client, wait_job

    client = make_client(tiny_hub, tmp_path_factory.mktemp("fuzz-app"), auto_download=False, **CONTEXT)
    with client:
        job = client.post("/api/generate/music", json={"prompt": "drums", "duration": 0.2, "async": True}).json()["job"]
        wait_job(client, job["id"])
        document = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        yield client, document, job["id"]


def _conforms(document, path: str, method: str, response) -> None:
    assert response.status_code < 500, (method, path, response.status_code, response.text[:500])
    document[path][method].validate_response(response)


def _encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _finite(value: Any) -> bool:
    """Not NaN or inf anywhere: those bodies go to their own test (test_non_finite_floats_never_get_a_5xx)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


GENERATE = {
    "music": "/api/generate/music",
    "sound": "/api/generate/sound",
    "melody": "/api/generate/melody",
    "continuation": "/api/generate/continuation",
}


def _posted_json_conforms(app, path: str, strategy, examples: int) -> None:
    """Every body `strategy` makes, POSTed as JSON to `path`: no 5xx, and the answer as documented."""
    client, document, _ = app

    @given(strategy)
    @settings(max_examples=examples)
    def check(body):
        r = client.post(path, content=_encoded(body), headers={"Content-Type": "application/json"})
        _conforms(document, path, "POST", r)

    check()


@pytest.mark.parametrize("kind", sorted(GENERATE))
def test_generated_json_bodies_never_get_a_5xx(app, kind):
    _posted_json_conforms(app, GENERATE[kind], bodies(SCHEMAS[kind]).filter(_finite), 60)


def test_generated_job_lists_never_get_a_5xx(app):
    _posted_json_conforms(app, "/api/jobs", bodies(SCHEMAS["job items"]).filter(_finite), 80)


@pytest.mark.parametrize("kind", ["music", "melody"])
def test_lone_surrogates_never_get_a_5xx(app, kind):
    strings = [n for n in ("prompt", "model", "melody_job", "melody_content") if n in _fields(SCHEMAS[kind])]
    lone = st.builds(lambda a, b: a + "\ud800" + b, text(), text())
    with_lone = st.dictionaries(st.sampled_from(strings), lone, min_size=1).map(lambda d: {"prompt": "drums", **d})
    _posted_json_conforms(app, GENERATE[kind], with_lone, 30)


def _tiny_wav() -> str:
    import base64
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32), 8000, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode()


def mix_bodies() -> st.SearchStrategy[Any]:
    """Mix requests: tracks with the track's own field names holding any JSON value, some of them with
    real audio so that the mixing runs, and the request's other fields."""
    names = st.sampled_from(sorted(MixTrack.model_fields)) | text()
    numbers = st.sampled_from([0, 0.01, 0.5, 1, 2.5, -1, 1e308, 86400, 1e-9, True, "1", None])
    values = json_values() | numbers
    wav = _tiny_wav()
    audible = st.builds(lambda extra: {"audio_base64": wav, **extra}, st.dictionaries(names, values, max_size=4))
    tracks = st.lists(audible | st.dictionaries(names, values, max_size=4), min_size=1, max_size=5)
    rest = st.dictionaries(st.sampled_from(_fields(MixRequest)), values, max_size=4)
    return st.builds(lambda t, r: {**r, "tracks": t}, tracks, rest)


def test_generated_mix_bodies_never_get_a_5xx(app):
    _posted_json_conforms(app, "/api/mix", mix_bodies().filter(_finite), 120)


def test_non_finite_floats_never_get_a_5xx(app):
    fields = ["melody_start", "melody_end", "duration", "temperature", "top_p", "cfg_coef"]
    non_finite = st.sampled_from([math.inf, -math.inf, math.nan])
    objects = bodies(SCHEMAS["melody"]).filter(lambda b: isinstance(b, dict))  # bodies are sometimes lists
    with_non_finite = st.builds(
        lambda body, key, value: {**body, key: value}, objects, st.sampled_from(fields), non_finite
    )
    _posted_json_conforms(app, GENERATE["melody"], with_non_finite, 60)


FORM_TEXT = st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=8)
FORM_VALUES = st.sampled_from(["", "1", "0.5", "true", "native", "wav", "16", "-1", "1e308", "nan", "²"]) | FORM_TEXT


def _form_fields(model: type[BaseModel]):
    names = st.sampled_from(_fields(model)) | FORM_TEXT.filter(bool)
    return st.dictionaries(names, FORM_VALUES, max_size=6).map(lambda d: {"prompt": "drums", **d})


def _multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "fuzzboundary7e1f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return "".join(parts).encode() + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("kind", ["music", "sound"])
def test_generated_forms_never_get_a_5xx(app, kind):
    client, document, _ = app
    path = GENERATE[kind]

    @given(_form_fields(SCHEMAS[kind]), st.booleans())
    @settings(max_examples=60)
    def check(fields, multipart):
        if multipart:
            body, content_type = _multipart(fields)
            r = client.post(path, content=body, headers={"Content-Type": content_type})
        else:
            r = client.post(path, data=fields)
        _conforms(document, path, "POST", r)

    check()


def _query(model: type[BaseModel]):
    return st.dictionaries(st.sampled_from(_fields(model)) | FORM_TEXT.filter(bool), FORM_VALUES, max_size=4)


def test_generated_job_queries_never_get_a_5xx(app):
    client, document, job_id = app

    @given(_query(JobsQuery), _query(OutputOptions))
    @settings(max_examples=60)
    def check(listing, audio):
        r = client.get("/api/jobs", params=listing)
        _conforms(document, "/api/jobs", "GET", r)
        r = client.get(f"/api/jobs/{job_id}/audio", params=audio)
        _conforms(document, "/api/jobs/{job_id}/audio", "GET", r)

    check()
