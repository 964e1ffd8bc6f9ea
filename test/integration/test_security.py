"""Web pages cannot drive the service, and answers give nothing of the host away (server/http/guard.py,
server/http/payload.py, server/http/auth.py), through the ASGI app on the tiny models.

Requests are sent the way a browser sends them: a page on another origin gets no preflight for a
text/plain or form POST, only an `Origin` (and `Sec-Fetch-Site`) header the page cannot choose; a
DNS-rebinding page reaches the service under its own host name. Clients that are not browsers
(curl, the CLI) send neither header and are not affected.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from api_client import make_client
from test_cli_support import Cli, assert_clean_error, free_port
from test_codec_api import audio_file

from lib.content import ContentStore
from lib.settings import Settings, is_loopback
from server.tiny.write import write_tiny_models

EVIL = "http://evil.example"
UI = "http://ui.example:3000"
MUSIC = {"prompt": "a page made me", "duration": 0.5, "async": True}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(tiny_hub, tmp_path_factory):
    with make_client(tiny_hub, tmp_path_factory.mktemp("security")) as c:
        yield c


def job_count(client) -> int:
    return client.get("/api/jobs").json()["total"]


def refused(r, code: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == code, r.text


# ----------------------------------------------------------------------------------- cross-site requests
def test_a_simple_text_plain_post_of_json_is_refused(client):
    """What `fetch(url, {method: "POST", mode: "no-cors", body: JSON.stringify(...)})` sends from a page."""
    before = job_count(client)
    body = json.dumps({"kind": "music", "prompt": "x", "duration": 0.5})
    r = client.post("/api/jobs", content=body, headers={"content-type": "text/plain;charset=UTF-8", "origin": EVIL})
    refused(r, "cross_site_request")
    # Even without the Origin (an old browser, a privacy extension): JSON only as application/json.
    for ctype in ("text/plain;charset=UTF-8", None):
        headers = {"content-type": ctype} if ctype else {}
        r = client.post("/api/jobs", content=body, headers=headers)
        assert r.status_code == 415, r.text
        assert "application/json" in r.json()["error"]["message"]
        r = client.post("/api/generate/music", content=json.dumps(MUSIC), headers=headers)
        assert r.status_code == 415, r.text
    assert job_count(client) == before


def test_a_form_post_from_a_page_cannot_start_a_download_or_a_generation(client):
    """What `<form method=post action=http://127.0.0.1:7862/api/models/.../download>` sends."""
    before = job_count(client)
    form = {"content-type": "application/x-www-form-urlencoded", "origin": EVIL, "sec-fetch-site": "cross-site"}
    refused(client.post("/api/models/musicgen-large/download", content=b"", headers=form), "cross_site_request")
    refused(
        client.post("/api/generate/music", data={"prompt": "x", "duration": "0.5"}, headers={"origin": EVIL}),
        "cross_site_request",
    )
    assert client.get("/api/models/musicgen-large").json()["download_job"] is None
    assert job_count(client) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "null"},  # a sandboxed iframe, a file:// page
        {"origin": "http://localhost:8888"},  # another local service's page: same site, other origin
        {"origin": "https://localhost"},
        {"sec-fetch-site": "cross-site"},  # a browser that marks the request but sends no Origin
    ],
)
def test_state_changing_requests_from_other_origins_are_403(client, headers):
    job = client.post("/api/generate/music", json=MUSIC).json()["job"]
    refused(client.post("/api/generate/music", json=MUSIC, headers=headers), "cross_site_request")
    refused(client.delete(f"/api/jobs/{job['id']}", headers=headers), "cross_site_request")
    refused(client.post("/api/models/musicgen-small/unload", headers=headers), "cross_site_request")
    refused(client.delete("/api/models/musicgen-small", headers=headers), "cross_site_request")
    assert client.get(f"/api/jobs/{job['id']}").json()["state"] != "cancelled"


@pytest.mark.parametrize(
    "headers", [{}, {"origin": "http://localhost"}, {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}]
)
def test_clients_and_same_origin_pages_pass(client, headers):
    r = client.post("/api/generate/music", json=MUSIC, headers=headers)
    assert r.status_code == 202, r.text
    r = client.post(
        "/api/generate/music",
        content=json.dumps(MUSIC),
        headers={**headers, "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 202, r.text


def test_reads_from_other_origins_get_no_cors_headers_and_preflights_are_not_granted(client):
    r = client.get("/api/jobs", headers={"origin": EVIL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers  # the page cannot read it
    preflight = {
        "origin": EVIL,
        "access-control-request-method": "DELETE",
        "access-control-request-headers": "content-type",
    }
    r = client.options("/api/jobs/abc", headers=preflight)
    assert "access-control-allow-origin" not in r.headers and r.status_code >= 400


def test_an_allowed_origin_gets_cors_and_may_post(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, allowed_origins=f"{UI}/, http://other.example") as c:
        preflight = {
            "origin": UI,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        }
        r = c.options("/api/generate/music", headers=preflight)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == UI
        assert "POST" in r.headers["access-control-allow-methods"]
        r = c.post("/api/generate/music", json=MUSIC, headers={"origin": UI, "sec-fetch-site": "cross-site"})
        assert r.status_code == 202, r.text
        assert r.headers["access-control-allow-origin"] == UI
        assert "x-job-id" in r.headers["access-control-expose-headers"].lower()
        r = c.options("/api/generate/music", headers={**preflight, "origin": EVIL})
        assert "access-control-allow-origin" not in r.headers
        refused(c.post("/api/generate/music", json=MUSIC, headers={"origin": EVIL}), "cross_site_request")
    with make_client(tiny_hub, tmp_path / "any", allowed_origins="*") as c:  # every page, as asked
        r = c.post("/api/generate/music", json=MUSIC, headers={"origin": EVIL})
        assert r.status_code == 202 and r.headers["access-control-allow-origin"] == "*", r.text


# ----------------------------------------------------------------------------------- DNS rebinding
@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:7862", "localhost.attacker.example", "127.0.0.1.nip.io"]
)
def test_a_host_name_the_service_does_not_answer_to_is_403(client, host):
    for method, path in (
        ("GET", "/api/jobs"),
        ("GET", "/api/models"),
        ("DELETE", "/api/models/musicgen-small"),
        ("GET", "/health"),
    ):
        r = client.request(method, path, headers={"host": host})
        refused(r, "host_not_allowed")
        assert "AUDIOCRAFT_ALLOWED_HOSTS" in r.json()["error"]["hint"]


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:7862",
        "LocalHost.:7862",
        "127.0.0.1:7862",
        "[::1]:7862",
        "192.168.1.20:7862",
        "[fe80::1]",
    ],
)
def test_localhost_and_ip_addresses_pass(client, host):
    assert client.get("/api/jobs", headers={"host": host}).status_code == 200


def test_allowed_hosts_and_the_bound_host_pass(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path, host="studio.lan", allowed_hosts="audio.example, *.farm.example") as c:
        for host in ("studio.lan:7862", "audio.example", "node1.farm.example:7862"):
            assert c.get("/api/jobs", headers={"host": host}).status_code == 200, host
        refused(c.get("/api/jobs", headers={"host": "farm.example.attacker.example"}), "host_not_allowed")
    with make_client(tiny_hub, tmp_path / "any", allowed_hosts="*") as c:
        assert c.get("/api/jobs", headers={"host": "anything.example"}).status_code == 200


# ----------------------------------------------------------------------------------- binding and the key
@pytest.mark.parametrize(
    "host,key,opt_out,refused_",
    [
        ("127.0.0.1", None, False, False),
        ("localhost", None, False, False),
        ("::1", None, False, False),
        ("127.0.0.2", None, False, False),
        ("0.0.0.0", None, False, True),
        ("::", None, False, True),
        ("192.168.1.5", None, False, True),
        ("0.0.0.0", "k3y", False, False),
        ("0.0.0.0", None, True, False),
    ],
)
def test_the_server_refuses_to_serve_beyond_loopback_without_a_key(tmp_path, host, key, opt_out, refused_):
    s = Settings(host=host, api_key=key, allow_unauthenticated=opt_out, data_dir=tmp_path)
    assert (s.unsafe_bind() is not None) is refused_
    assert is_loopback(host) is (host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))


def test_python_m_server_on_0000_without_a_key_exits_with_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOCRAFT_")}
    env.update(AUDIOCRAFT_HOST="0.0.0.0", AUDIOCRAFT_DATA_DIR=str(tmp_path / "data"))
    p = subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]  # what a runtime shows of a server that exits at once
    assert (
        "refusing to serve 0.0.0.0" in last
        and "AUDIOCRAFT_API_KEY" in last
        and "AUDIOCRAFT_ALLOW_UNAUTHENTICATED=true" in last
    )
    assert "Traceback" not in p.stderr and not (tmp_path / "data").exists()  # nothing started


def test_the_cli_refuses_before_starting_anything(tmp_path):
    cli = Cli(tmp_path / "data", free_port(), tmp_path)
    for args in (("serve", "--host", "0.0.0.0"), ("manage", "start")):
        r = cli(*args, AUDIOCRAFT_HOST="0.0.0.0")
        assert_clean_error(r)
        assert "without an API key" in r.err and "AUDIOCRAFT_ALLOW_UNAUTHENTICATED=true" in r.err, r.err
    assert not (tmp_path / "data" / "server.pid").exists()


# ----------------------------------------------------------------------------------- files
def test_the_data_dir_and_the_job_store_are_private(tiny_hub, tmp_path):
    with make_client(tiny_hub, tmp_path) as c:
        r = c.post("/api/generate/music", json={"prompt": "private", "duration": 0.5})
        assert r.status_code == 200, r.text
        data = tmp_path / "data"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        files = [p for p in (data / "artifacts").rglob("*") if p.is_file()]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


# ----------------------------------------------------------------------------------- no host paths in answers
def test_error_answers_carry_no_stack_trace_and_no_path_of_the_host(tmp_path, monkeypatch):
    from server.hub import download

    hub = tmp_path / "hub-with-a-damaged-model"
    write_tiny_models(hub, names=["musicgen-small", "musicgen-melody", "encodec-24khz"])
    for blob in (hub / "models--facebook--musicgen-small" / "blobs").iterdir():
        if blob.stat().st_size > 100_000:
            blob.write_bytes(b"\0" * 64)  # the weights: damaged
    data = tmp_path / "data"
    content = ContentStore.for_data_dir(data)
    wav = content.add_bytes(audio_file(0.5), name="gone", type="audio")
    (content.root / wav.path).unlink()  # indexed, but its file is missing

    answers = []
    with make_client(hub, tmp_path, auto_download=False) as c:

        def send(method: str, path: str, **kw) -> None:
            r = c.request(method, path, **kw)
            assert 400 <= r.status_code < 600, (method, path, r.status_code)
            answers.append((method, path, r.status_code, r.text))

        send("POST", "/api/generate/music", json={"prompt": "x", "duration": 0.5, "model": "musicgen-medium"})
        send("POST", "/api/models/musicgen-small/load")  # its files do not load
        send("POST", "/api/generate/music", json={"prompt": "x", "duration": 0.5, "model": "musicgen-small"})
        send(
            "POST", "/api/generate/melody", json={"duration": 0.5, "melody_content": "gone", "model": "musicgen-melody"}
        )
        send("POST", "/api/generate/melody", json={"duration": 0.5, "melody_content": "nothing-here"})
        send("POST", "/api/generate/melody", json={"duration": 0.5, "melody_job": "0123456789abcdef"})
        send("POST", "/api/generate/continuation", files={"audio": ("x.wav", b"not audio")}, data={"duration": "1"})
        send("POST", "/api/encode", files={"file": ("in.wav", b"RIFF\0\0\0\0WAVEjunk")})
        send("POST", "/api/decode", files={"file": ("in.ecdc", b"ECDC-but-not-really")})
        send("POST", "/api/decode", content=b"\0" * 100, headers={"content-type": "application/octet-stream"})
        send("POST", "/api/encode", json={"file": "x"})
        send("POST", "/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
        send("POST", "/api/jobs", json=[{"kind": "music", "prompt": "x", "duration": 0.5, "model": "nope"}])
        send("GET", "/api/jobs/nope")
        send("GET", "/api/jobs?limit=0")
        send("GET", "/api/models/not-a-model")
        send("DELETE", "/api/models/musicgen-larg")
        send("GET", "/nowhere")
        send("PUT", "/api/jobs")
        monkeypatch.setattr(download.os, "access", lambda *_a: False)  # a read-only models dir
        monkeypatch.setattr(c.app.state.services.settings, "auto_download", True)
        send("POST", "/api/models/musicgen-large/download")
        monkeypatch.setattr(
            c.app.state.services.registry, "unload", lambda _n: (_ for _ in ()).throw(RuntimeError(f"{hub}/boom"))
        )
        send("POST", "/api/models/musicgen-small/unload")  # a bug: a 500, generic

    assert {a[2] for a in answers} >= {404, 409, 422, 500, 503}, answers
    roots = {str(tmp_path), str(hub), str(data), str(Path.home()), str(ROOT)}
    for method, path, status, text in answers:
        assert "Traceback" not in text and 'File "' not in text, (method, path, text)
        for root in roots:
            assert root not in text, (method, path, status, text)
        assert json.loads(text)["error"]["message"], text
