"""Datasets and fine-tuning through the API, on a tiny MusicGen: a dataset from uploads (sidecar
captions, metadata.jsonl, a ZIP, bad files reported), a LoRA run as a job, and its result as a
catalogue model that generates, unloads, deletes and refuses a base it does not fit."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf
from api_client import make_client, wait_job

from server.tiny.write import write_tiny_models

RATE = 32000


def wav(seconds: float, freq: float = 440.0, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.fixture
def hub(tmp_path):
    folder = tmp_path / "hub"
    write_tiny_models(folder, names=["musicgen-small", "musicgen-stereo-small"])
    return folder


@pytest.fixture
def client(hub, tmp_path):
    with make_client(hub, tmp_path, auto_download=False, finetune_threads=1) as c:
        yield c


def upload(client, name: str, files: list[tuple[str, bytes]], **fields):  # noqa: ANN001, ANN201
    data = {"name": name, **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/datasets", data=data, files=[("files", f) for f in files])


def make_dataset(client, name: str = "studio"):  # noqa: ANN001, ANN201
    files = [
        ("a.wav", wav(2.5, 220)),
        ("a.txt", b"warm bass"),
        ("b.wav", wav(1.5, 330)),
        ("b.json", json.dumps({"description": "bright lead"}).encode()),
        ("c.wav", wav(1.2, 440)),  # takes the default caption
        ("broken.wav", b"not audio at all"),
        ("short.wav", wav(0.3)),
    ]
    return upload(client, name, files, caption="house default", window_s=2.0)


def test_dataset_from_files_reports_each_file(client):
    r = make_dataset(client)
    assert r.status_code == 201, r.text
    body = r.json()
    by_file = {f["file"]: f for f in body["files"]}
    assert by_file["a.wav"]["status"] == "ok" and by_file["a.wav"]["caption"] == "warm bass"
    assert by_file["a.wav"]["windows"] == 1  # 2.5 s in windows of 2 s: the 0.5 s tail is dropped
    assert by_file["b.wav"]["caption"] == "bright lead" and by_file["b.wav"]["caption_from"] == "sidecar-json"
    assert by_file["c.wav"]["caption"] == "house default" and by_file["c.wav"]["caption_from"] == "default"
    assert by_file["broken.wav"]["status"] == "skipped" and "not audio" in by_file["broken.wav"]["reason"]
    assert by_file["short.wav"]["status"] == "skipped" and "at least" in by_file["short.wav"]["reason"]
    assert body["windows"] == 3 and body["codec"]["codebooks"] == 4 and body["codec"]["sample_rate"] == RATE
    assert client.get("/api/datasets/studio").json()["windows"] == 3
    assert [d["name"] for d in client.get("/api/datasets").json()["datasets"]] == ["studio"]
    again = make_dataset(client)
    assert again.status_code == 409 and again.json()["error"]["code"] == "dataset_exists"


def test_dataset_from_a_zip_with_metadata_jsonl_resampled(client):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("clips/one.wav", wav(1.5, 220, rate=44100))
        z.writestr("clips/two.flac", b"")
        z.writestr("clips/metadata.jsonl", json.dumps({"file_name": "one.wav", "text": "from jsonl"}) + "\n")
    r = upload(client, "zipped", [("set.zip", archive.getvalue())])
    assert r.status_code == 201, r.text
    files = {f["file"]: f for f in r.json()["files"]}
    assert files["clips/one.wav"]["caption"] == "from jsonl" and files["clips/one.wav"]["sample_rate"] == 44100
    assert files["clips/two.flac"]["status"] == "skipped"


def test_no_usable_file_is_a_422_naming_each(client):
    r = upload(client, "empty", [("x.wav", b"junk"), ("y.wav", wav(0.2))])
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "dataset_empty" and "x.wav" in error["message"] and "y.wav" in error["message"]
    assert client.get("/api/datasets/empty").status_code == 404


def test_bad_names_and_requests(client):
    assert upload(client, "Bad Name", [("a.wav", wav(2))]).status_code == 422
    make_dataset(client)
    bad = {"base_model": "musicgen-small", "dataset": "studio", "steps": 2}
    r = client.post("/api/finetune", json={**bad, "name": "musicgen-medium+x"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = client.post("/api/finetune", json={**bad, "name": "x", "dataset": "nope"})
    assert r.status_code == 404
    r = client.post("/api/finetune", json={**bad, "name": "x", "base_model": "musicgen-stereo-small"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "dataset"  # encoded for a mono codec
    r = client.post("/api/finetune", json={**bad, "name": "x", "steps": 2, "epochs": 1})
    assert r.status_code == 422


def test_finetune_makes_a_catalogue_model_that_generates(client, hub):
    assert make_dataset(client).status_code == 201
    r = client.post(
        "/api/finetune",
        json={"base_model": "small", "dataset": "studio", "name": "studio", "steps": 4, "batch_size": 2, "rank": 4},
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    # The live figures end with the job; the result's are the model's (finetune.json).
    name = "musicgen-small+studio"
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    model = models[name]
    assert model["installed"] and model["base"] == "musicgen-small"
    assert model["finetune"]["steps"] == 4 and model["finetune"]["dataset"] == "studio"
    assert model["finetune"]["final_loss"] > 0 and model["finetune"]["rank"] == 4
    assert client.get("/api/finetune").json()["jobs"][0]["id"] == job["id"]

    audio = client.post("/api/generate/music", json={"prompt": "warm bass", "model": name, "duration": 0.5})
    assert audio.status_code == 200, audio.text
    assert audio.headers["x-model"] == name
    assert client.get(f"/api/models/{name}").json()["loaded"]
    assert client.post(f"/api/models/{name}/unload").json()["loaded"] is False

    # A name taken is a 409; the model is deleted like any other.
    again = client.post("/api/finetune", json={"base_model": "musicgen-small", "dataset": "studio", "name": name})
    assert again.status_code == 409
    assert client.delete(f"/api/models/{name}").status_code == 200
    assert name not in {m["name"] for m in client.get("/api/models").json()["models"]}


def test_an_adapter_for_another_base_shape_is_refused(client, hub):
    assert make_dataset(client).status_code == 201
    body = {"base_model": "musicgen-small", "dataset": "studio", "name": "x", "steps": 1}
    r = client.post("/api/finetune", json=body)
    assert wait_job(client, r.json()["job"]["id"])["state"] == "succeeded"
    facts = next(hub.glob("models--finetuned--musicgen-small.x/snapshots/*/finetune.json"))
    data = json.loads(facts.read_text())
    data["base_shape"]["hidden_size"] = 1024  # as if trained on the real musicgen-small
    facts.unlink()  # a link into blobs/: replaced, not written through
    facts.write_text(json.dumps(data))
    r = client.post("/api/models/musicgen-small+x/load")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "adapter_base_mismatch" and "hidden_size 1024 vs 32" in error["message"]


def test_cancel_a_running_finetune(client):
    assert make_dataset(client).status_code == 201
    r = client.post(
        "/api/finetune", json={"base_model": "musicgen-small", "dataset": "studio", "name": "long", "steps": 100000}
    )
    job_id = r.json()["job"]["id"]
    wait_job(client, job_id, until=lambda jobs: (jobs[0].get("training") or {}).get("step", 0) >= 1)
    assert client.delete(f"/api/finetune/{job_id}").status_code == 200
    assert wait_job(client, job_id)["state"] == "cancelled"
    assert "musicgen-small+long" not in {m["name"] for m in client.get("/api/models").json()["models"]}


def test_dataset_and_finetune_on_the_redis_queue(hub, tmp_path, redis_url):
    """Both kinds on the Redis queue: the live training figures travel through the job record."""
    with make_client(hub, tmp_path, queue_url=redis_url, auto_download=False, finetune_threads=1) as c:
        assert make_dataset(c).status_code == 201
        body = {"base_model": "musicgen-small", "dataset": "studio", "name": "redis", "steps": 20, "rank": 2}
        job_id = c.post("/api/finetune", json=body).json()["job"]["id"]
        seen = wait_job(c, job_id, until=lambda jobs: jobs[0]["state"] != "queued" and jobs[0].get("training"))
        assert seen["training"]["total_steps"] == 20
        assert wait_job(c, job_id)["state"] == "succeeded"
        assert c.get("/api/models/musicgen-small+redis").json()["finetune"]["steps"] == 20


def test_export_and_import_a_finetuned_model(client, hub, tmp_path):
    from server.hub import importer

    assert make_dataset(client).status_code == 201
    body = {"base_model": "musicgen-small", "dataset": "studio", "name": "moved", "steps": 1, "rank": 2}
    assert wait_job(client, client.post("/api/finetune", json=body).json()["job"]["id"])["state"] == "succeeded"
    from lib.catalogue import get_spec

    archive = importer.export_model(get_spec("musicgen-small+moved"), hub, tmp_path / "moved.tar.gz")

    other = tmp_path / "other-hub"
    write_tiny_models(other, names=["musicgen-small"])
    [done] = importer.import_model(archive, other)
    assert done.repo == "finetuned/musicgen-small.moved" and "adapter_model.safetensors" in done.files
    with make_client(other, tmp_path / "other", auto_download=False) as c:
        model = c.get("/api/models/musicgen-small+moved").json()
        assert model["installed"] and model["finetune"]["steps"] == 1
        r = c.post("/api/generate/music", json={"prompt": "x", "model": "musicgen-small+moved", "duration": 0.3})
        assert r.status_code == 200, r.text

    # An adapter's files imported under another base's name are refused, and nothing is installed.
    snap = next((hub / "models--finetuned--musicgen-small.moved" / "snapshots").iterdir())
    loose = tmp_path / "loose"
    loose.mkdir()
    for item in snap.iterdir():
        (loose / item.name).write_bytes(item.read_bytes())
    with pytest.raises(importer.ImportFailed, match="trained on musicgen-small, not musicgen-medium"):
        importer.import_model(loose, other, name="musicgen-medium+moved")
    assert not (other / "models--finetuned--musicgen-medium.moved").exists()
