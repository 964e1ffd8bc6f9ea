"""Model aliases through the HTTP API (ASGI app, tiny models): listed in /api/models, accepted
wherever a model is named, and an unknown name is a 404 naming the close matches (issue 14)."""

from __future__ import annotations

import pytest
from api_client import make_client, wait_job

from lib.catalogue import ALIASES


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("aliases"), default_music_model="small") as c:
        yield c


def test_models_list_shows_the_aliases(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["musicgen-small"]["aliases"] == ["small"]
    assert models["musicgen-stereo-melody-large"]["aliases"] == ["stereo-melody-large"]
    assert models["encodec-24khz"]["aliases"] == []
    listed = {a: m["name"] for m in models.values() for a in m["aliases"]}
    assert listed == ALIASES
    assert {"small", "medium", "large", "melody", "stereo-melody-large", "stereo-large", "melody-large"} <= set(listed)


@pytest.mark.parametrize(
    ("alias", "name"), [("small", "musicgen-small"), ("Stereo-Melody-Large", "musicgen-stereo-melody-large")]
)
def test_one_model_by_alias(client, alias, name):
    r = client.get(f"/api/models/{alias}")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name


def test_generate_and_jobs_take_an_alias(client):
    r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5, "model": "small", "seed": 1})
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == "musicgen-small"
    # The settings' default may be an alias too (default_music_model="small" here).
    r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5, "seed": 1})
    assert r.status_code == 200 and r.headers["x-model"] == "musicgen-small"
    r = client.post("/api/jobs", json=[{"prompt": "pads", "duration": 0.5, "model": "stereo-small"}])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["ids"][0])
    assert (job["state"], job["model"]) == ("succeeded", "musicgen-stereo-small")
    assert client.post("/api/models/small/load").json()["loaded"] is True
    assert client.post("/api/models/small/unload").json()["name"] == "musicgen-small"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/generate/music", {"prompt": "x", "model": "musicgen-smal"}),
        ("POST", "/api/jobs", {"prompt": "x", "model": "musicgen-smal"}),
        ("GET", "/api/models/musicgen-smal", None),
        ("POST", "/api/models/musicgen-smal/download", None),
    ],
)
def test_unknown_name_is_404_with_close_matches(client, method, path, body):
    r = client.request(method, path, json=body)
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["code"] == "unknown_model" and err["field"] == "model"
    assert err["message"].startswith("there is no model named 'musicgen-smal'; did you mean musicgen-small")
    assert "alias" in err["hint"] and "stereo-melody-large" in err["hint"]


def test_alias_typo_suggests_the_alias(client):
    err = client.post("/api/generate/music", json={"prompt": "x", "model": "stereo-larg"}).json()["error"]
    assert "stereo-large (musicgen-stereo-large)" in err["message"]
