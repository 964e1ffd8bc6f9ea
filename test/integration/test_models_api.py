"""Model management through the HTTP API (ASGI app), downloading from a hub on loopback."""

from __future__ import annotations

import pytest
from api_client import make_client, wait_job
from engine_reference import held
from hub_server import FakeHub, repo_from_cache
from waiting import get_json, job_signature, wait_for_progress

NAME, REPO = "musicgen-small", "facebook/musicgen-small"


@pytest.fixture
def hub(tiny_hub, monkeypatch):
    """The tiny musicgen-small on a hub on loopback; huggingface_hub pointed at it and online."""
    from huggingface_hub import constants

    with FakeHub(repos={REPO: repo_from_cache(tiny_hub, REPO)}) as h:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        yield h


def wait_for_download_total(client, hub, job_id):
    """The job's view once it knows its download's size; progress is the hub's requests and the job."""

    def probe():
        job = get_json(client, f"/api/jobs/{job_id}")
        done = (job.get("download") or {}).get("bytes_total")
        return (job if done else None), (len(hub.requests), job_signature(job))

    return wait_for_progress(probe, f"job {job_id} to know the size of its download")


def test_download_is_a_job_with_byte_progress_and_a_second_call_joins_it(hub, tmp_path):
    with make_client(tmp_path / "models", tmp_path) as client:
        hub.hold()  # the listing and HEADs answer; file bodies wait
        first = client.post(f"/api/models/{NAME}/download")
        assert first.status_code == 202, first.text
        job_id = first.json()["job"]["id"]
        assert first.headers["Location"] == f"/api/jobs/{job_id}"
        second = client.post(f"/api/models/{NAME}/download")
        assert second.status_code == 202 and second.json()["job"]["id"] == job_id
        job = wait_for_download_total(client, hub, job_id)
        assert job["kind"] == "download" and job["state"] == "running"
        info = client.get(f"/api/models/{NAME}").json()
        assert info["download_job"] == job_id and info["installed"] is False
        total = job["download"]["bytes_total"]
        assert total > 1_000_000 and job["download"]["bytes_done"] < total
        hub.release()
        job = wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert len(hub.file_gets("model.safetensors")) == 1  # fetched once for both calls
        info = client.get(f"/api/models/{NAME}").json()
        assert info["installed"] is True and info["download_job"] is None
        assert info["size_on_disk_bytes"] == total
        again = client.post(f"/api/models/{NAME}/download")
        assert again.status_code == 200 and again.json()["installed"] is True
        no_audio = client.get(f"/api/jobs/{job_id}/audio")  # a download has none: a 409, not a 500
        assert no_audio.status_code == 409 and no_audio.json()["error"]["code"] == "no_audio"


def test_first_use_downloads_the_model_with_progress_on_the_job(hub, tmp_path):
    with make_client(tmp_path / "models", tmp_path) as client:
        hub.hold()
        r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5, "async": True})
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        job = wait_for_download_total(client, hub, job_id)
        assert job["state"] == "queued" and job["kind"] == "music"
        hub.release()
        job = wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert client.get(f"/api/jobs/{job_id}/audio").status_code == 200
        info = client.get(f"/api/models/{NAME}").json()
        assert info["installed"] and info["loaded"] and info["memory_bytes"] > 0 and info["in_use"] == 0


def test_without_auto_download_the_answer_is_409_with_the_command(hub, tmp_path):
    with make_client(tmp_path / "models", tmp_path, auto_download=False) as client:
        r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5})
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "model_not_installed"
        assert err["hint"] == f"resource-audiocraft models pull {NAME}"
    assert hub.requests == []


def test_without_network_a_request_fails_plainly(tmp_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    with make_client(tmp_path / "models", tmp_path) as client:
        r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5})
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "download_failed"
        assert "no connection to the hub" in err["message"] and "models import" in err["hint"]


def test_delete_load_unload(tiny_hub, tmp_path):
    from server.tiny.write import write_tiny_models

    models = tmp_path / "models"
    write_tiny_models(models, names=[NAME])
    with make_client(models, tmp_path) as client:
        r = client.post(f"/api/models/{NAME}/load")
        assert r.status_code == 200 and r.json()["loaded"] and r.json()["memory_bytes"] > 0
        registry = client.app.state.services.registry
        with held(registry, NAME):  # as a running job holds it
            assert client.post(f"/api/models/{NAME}/unload").status_code == 409
            r = client.delete(f"/api/models/{NAME}")
            assert r.status_code == 409 and r.json()["error"]["code"] == "model_in_use"
        r = client.post(f"/api/models/{NAME}/unload")
        assert r.status_code == 200 and r.json()["loaded"] is False and r.json()["memory_bytes"] is None
        r = client.delete(f"/api/models/{NAME}")
        assert r.status_code == 200, r.text
        assert r.json()["installed"] is False and r.json()["size_on_disk_bytes"] == 0
        assert not any(models.glob("models--*"))
        assert client.post(f"/api/models/{NAME}/load").status_code == 409  # not installed
        assert client.delete("/api/models/nope").status_code == 404


def test_cancelling_a_download_fails_the_requests_waiting_for_it(hub, tmp_path):
    with make_client(tmp_path / "models", tmp_path) as client:
        hub.hold("model.safetensors")
        r = client.post("/api/generate/music", json={"prompt": "a beat", "duration": 0.5, "async": True})
        job_id = r.json()["job"]["id"]

        def download_started():
            signature = (len(hub.requests), job_signature(get_json(client, f"/api/jobs/{job_id}")))
            return get_json(client, f"/api/models/{NAME}")["download_job"], signature

        download_id = wait_for_progress(download_started, f"{NAME}'s download job to start")
        assert client.delete(f"/api/jobs/{download_id}").status_code == 200
        hub.release()
        assert wait_job(client, download_id)["state"] == "cancelled"
        job = wait_job(client, job_id)
        assert job["state"] == "failed" and job["error"]["code"] == "download_failed"
        assert "cancelled" in job["error"]["message"]
        assert client.get(f"/api/models/{NAME}").json()["installed"] is False


def test_a_load_runs_in_a_thread_that_ends_with_it(tiny_hub, tmp_path, monkeypatch):
    """An idle request thread that ran torch keeps an OpenMP team that throttles the decode worker
    (server/engine/threads.py in_own_thread): the load's thread must be gone when the answer comes."""
    import threading

    from server.models.registry import ModelRegistry

    seen: list[threading.Thread] = []
    real_get = ModelRegistry.get

    def get(self, name):
        seen.append(threading.current_thread())
        return real_get(self, name)

    monkeypatch.setattr(ModelRegistry, "get", get)
    with make_client(tiny_hub, tmp_path) as client:
        assert client.post(f"/api/models/{NAME}/load").status_code == 200
    assert seen and all(not t.is_alive() and t.name == "audiocraft-torch-call" for t in seen)
