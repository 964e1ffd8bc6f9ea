"""Model management end to end: the real server process and the real CLI, downloading from a hub on
loopback (HF_ENDPOINT), with huggingface_hub online for the server only."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_client import wait_job
from hub_server import FakeHub, repo_from_cache
from server_process import ServerProcess
from test_cli_support import Cli, free_port
from waiting import HANG_GUARD_S, Stalled, get_json, job_signature, wait_for_progress

NAME, REPO = "musicgen-small", "facebook/musicgen-small"


@pytest.fixture
def hub(tiny_hub):
    with FakeHub(repos={REPO: repo_from_cache(tiny_hub, REPO)}) as h:
        yield h


def start_server(models: Path, data: Path, hub: FakeHub) -> ServerProcess:
    # conftest's offline switches (huggingface_hub reads either) stay on for everything but the server.
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}
    return ServerProcess(models, data, env=env, dtype="float32").start()


def wait_for_get(hub: FakeHub, name: str, http, job_id: str, server: ServerProcess) -> None:  # noqa: ANN001
    """Until the server asks the hub for `name`; progress is the hub's requests and the job."""

    def probe():
        signature = (len(hub.requests), job_signature(get_json(http, f"/api/jobs/{job_id}")))
        return bool(hub.file_gets(name)), signature

    try:
        wait_for_progress(probe, f"the server to GET {name} from the hub")
    except Stalled as e:
        raise AssertionError(f"{e}\n{server.log()}") from None


def test_pull_then_generate_then_rm(hub, tmp_path):
    models = tmp_path / "models"
    server = start_server(models, tmp_path / "data", hub)
    cli = Cli(tmp_path / "cli-data", server.port, cwd=tmp_path, AUDIOCRAFT_MODELS_DIR=str(models))
    try:
        r = cli("models", "pull", NAME, timeout=HANG_GUARD_S)
        assert r.code == 0, r.text + server.log()
        assert f"{NAME} is installed" in r.err
        assert "MB" in r.err  # the byte progress bar's last state: done / total
        with server.client() as http:
            info = http.get(f"/api/models/{NAME}").json()
            assert info["installed"] and not info["loaded"]
            r2 = http.post("/api/generate/music", json={"prompt": "drums", "duration": 0.5, "model": NAME})
            assert r2.status_code == 200, r2.text
            info = http.get(f"/api/models/{NAME}").json()
            assert info["loaded"] and info["memory_bytes"] > 0
            assert cli("models", "info", NAME, "--format", "json").code == 0
            r = cli("models", "rm", NAME, "--yes")
            assert r.code == 0, r.text
            assert "freed" in r.err
            info = http.get(f"/api/models/{NAME}").json()
            assert not info["installed"] and not info["loaded"] and info["size_on_disk_bytes"] == 0
        assert not list(models.glob("models--*"))
    finally:
        server.kill()


def test_a_download_cut_and_killed_midway_resumes_after_restart(hub, tmp_path):
    """The connection drops in the weights (resumed at once); then the server dies while the weights
    wait; at the next start the download job carries on, without fetching finished files again."""
    models, data = tmp_path / "models", tmp_path / "data"
    hub.cut_once.add("model.safetensors")
    hub.hold("tokenizer.json")  # after the weights, in name order
    server = start_server(models, data, hub)
    try:
        with server.client() as http:
            job_id = http.post(f"/api/models/{NAME}/download").json()["job"]["id"]
            wait_for_get(hub, "tokenizer.json", http, job_id, server)
            assert len(hub.file_gets("model.safetensors")) == 2  # cut, then fetched again
            job = http.get(f"/api/jobs/{job_id}").json()
            assert job["state"] == "running" and 0 < job["download"]["bytes_done"] < job["download"]["bytes_total"]
    finally:
        server.kill()  # SIGKILL mid-download
    hub.release()
    server = start_server(models, data, hub)
    try:
        with server.client() as http:
            job = wait_job(http, job_id)
            assert job["state"] == "succeeded", job
            assert http.get(f"/api/models/{NAME}").json()["installed"]
        assert len(hub.file_gets("config.json")) == 1  # finished files were kept
        assert len(hub.file_gets("model.safetensors")) == 2
        assert "resuming" in server.log()
    finally:
        server.kill()


def test_pull_without_the_server_downloads_in_process(hub, tmp_path):
    models = tmp_path / "models"
    cli = Cli(tmp_path / "cli-data", free_port(), cwd=tmp_path, AUDIOCRAFT_MODELS_DIR=str(models), HF_ENDPOINT=hub.url)
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    r = cli("models", "pull", NAME, timeout=HANG_GUARD_S, **env)
    assert r.code == 0, r.text
    assert "not running" in r.err and f"{NAME} is installed" in r.err
    r = cli("models", "info", NAME, "--format", "json")
    assert r.code == 0 and '"installed": true' in r.out
    r = cli("models", "rm", NAME, "--yes")
    assert r.code == 0 and not list(models.glob("models--*"))


def test_import_an_archive_with_the_cli(tiny_hub, tmp_path):
    import tarfile

    source = tiny_hub / "models--facebook--musicgen-small"
    archive = tmp_path / "small.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(source, arcname=source.name)
    models = tmp_path / "models"
    cli = Cli(tmp_path / "cli-data", free_port(), cwd=tmp_path, AUDIOCRAFT_MODELS_DIR=str(models))
    r = cli("models", "import", str(archive))
    assert r.code == 0, r.text
    assert "facebook/musicgen-small installed" in r.err
    r = cli("models", "import", str(archive))
    assert r.code == 1 and "--force" in r.err and "Traceback" not in r.err
    r = cli("models", "import", str(tmp_path / "nothing-here"))
    assert r.code == 1 and "does not exist" in r.err


def test_a_request_waiting_for_its_download_survives_a_restart(hub, tmp_path):
    models, data = tmp_path / "models", tmp_path / "data"
    hub.hold("model.safetensors")
    server = start_server(models, data, hub)
    try:
        with server.client() as http:
            body = {"prompt": "rain", "duration": 0.5, "model": NAME, "async": True}
            job_id = http.post("/api/generate/music", json=body).json()["job"]["id"]
            wait_for_get(hub, "model.safetensors", http, job_id, server)
            job = http.get(f"/api/jobs/{job_id}").json()
            assert job["state"] == "queued" and job["download"]["bytes_total"] > 0, job
    finally:
        server.kill()
    hub.release()
    server = start_server(models, data, hub)
    try:
        with server.client() as http:
            job = wait_job(http, job_id)
            assert job["state"] == "succeeded", (job, server.log())
            assert http.get(f"/api/jobs/{job_id}/audio").status_code == 200
    finally:
        server.kill()
