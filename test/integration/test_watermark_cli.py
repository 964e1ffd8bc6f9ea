"""`resource-audiocraft generate ... --watermark` and `watermark detect` as a user runs them, against
the real server process on the tiny models."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from server_process import ROOT, ServerProcess
from waiting import HANG_GUARD_S

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("wm-cli")).start()
    yield proc
    proc.kill()


def cli(server, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from cli.main import main_entry; main_entry()", "--port", str(server.port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD_S)


def test_generate_watermarked_then_detect(server, tmp_path):
    out = tmp_path / "marked.wav"
    r = cli(server, "generate", "music", "-p", "calm piano", "--duration", "1", "--watermark", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job"]
    job = httpx.get(f"http://127.0.0.1:{server.port}/api/jobs/{job_id}").json()
    assert job["request"]["watermark"] is True and job["result"]["info"]["watermark"] == "audioseal"

    r = cli(server, "watermark", "detect", str(out), "--json")
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["model"] == "audioseal" and verdict["input"] == str(out)
    assert 0.0 <= verdict["score"] <= 1.0 and len(verdict["channels"]) == 1
    assert verdict["detected"] == (verdict["score"] > verdict["threshold"])

    r = cli(server, "watermark", "detect", str(out))
    assert r.returncode == 0, r.stderr
    said = "watermarked (audioseal" if verdict["detected"] else "no watermark found (audioseal"
    assert said in r.stdout and f"score {verdict['score']:.3f}" in r.stdout


def test_detect_says_what_is_wrong(server, tmp_path):
    r = cli(server, "watermark", "detect", str(tmp_path / "missing.wav"))
    assert r.returncode == 1 and "is not a file" in r.stderr
    (tmp_path / "notes.txt").write_text("not audio")
    r = cli(server, "watermark", "detect", str(tmp_path / "notes.txt"))
    assert r.returncode == 1 and "'notes.txt' is not audio we can read" in r.stderr  # the service's 422
