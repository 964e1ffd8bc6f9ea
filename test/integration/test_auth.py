"""The optional API key, through the ASGI app and against the real server with the real CLI."""

from __future__ import annotations

import httpx
import pytest
from api_client import make_client
from server_process import ServerProcess
from test_cli_support import Cli
from waiting import HANG_GUARD_S

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("auth"), api_key=KEY) as c:
        yield c


def test_api_needs_the_key(client):
    r = client.get("/api/models")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    err = r.json()["error"]
    assert err["code"] == "unauthorized" and "Authorization: Bearer" in err["hint"]


@pytest.mark.parametrize("header", ["Bearer wrong", f"Basic {KEY}", KEY, f"Bearer {KEY}x"])
def test_a_wrong_key_is_refused(client, header):
    assert client.get("/api/jobs", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_right_key_passes_with_the_scheme_in_any_case(client, scheme):
    r = client.get("/api/models", headers={"Authorization": f"{scheme} {KEY}"})
    assert r.status_code == 200 and r.json()["models"]


@pytest.mark.parametrize("header", [f"bearer {KEY.upper()}", f"BearerX {KEY}", f"Bearer{KEY}", "bearer", ""])
def test_the_key_itself_is_still_exact(client, header):
    assert client.get("/api/jobs", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json"])
def test_probes_stay_open(client, path):
    assert client.get(path).status_code == 200


def test_no_key_configured_means_open(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path) as c:
        assert c.get("/api/models").status_code == 200


def test_real_server_and_cli_with_the_key(tiny_hub, tmp_path):
    server = ServerProcess(tiny_hub, tmp_path / "data", api_key=KEY, dtype="float32").start()
    try:
        assert httpx.get(f"{server.base}/api/models").status_code == 401
        body = {"prompt": "calm piano", "duration": 0.5, "seed": 1}
        r = httpx.post(
            f"{server.base}/api/generate/music",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=HANG_GUARD_S,
        )
        assert r.status_code == 200 and r.content[:4] == b"RIFF"

        cli = Cli(tmp_path / "cli-data", server.port, cwd=tmp_path, AUDIOCRAFT_MODELS_DIR=str(tiny_hub))
        assert cli("models", "list", AUDIOCRAFT_API_KEY=KEY).code == 0
        refused = cli("models", "list", AUDIOCRAFT_API_KEY="wrong")
        assert refused.code != 0 and "API key" in refused.out + refused.err
    finally:
        server.terminate()
