"""AudioGen and MusicGen-Melody as fine-tune bases, on tiny models: a dataset's codes are its codec's
(AudioGen's 16 kHz EnCodec is not MusicGen's 32 kHz one, and a dataset built for one is refused for
the other, saying what to do); a melody base trains on each window's chroma, which a 32 kHz dataset
keeps. The results are catalogue models that generate through the sound and melody endpoints."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import soundfile as sf
from api_client import make_client, wait_job
from test_finetune_api import wav

from server.tiny.write import write_tiny_models


@pytest.fixture
def hub(tmp_path):
    folder = tmp_path / "hub"
    write_tiny_models(folder, names=["musicgen-small", "musicgen-melody", "audiogen-medium"])
    return folder


@pytest.fixture
def client(hub, tmp_path):
    with make_client(hub, tmp_path, auto_download=False, finetune_threads=1) as c:
        yield c


def make_dataset(client, name: str, model: str, rate: int):  # noqa: ANN001, ANN201
    files = [("a.wav", wav(2.0, 220, rate)), ("b.wav", wav(2.0, 330, rate)), ("b.txt", b"a door slams")]
    data = {"name": name, "model": model, "caption": "rain on a roof", "window_s": "2"}
    r = client.post("/api/datasets", data=data, files=[("files", f) for f in files])
    assert r.status_code == 201, r.text
    return r.json()


def finetune(client, base: str, dataset: str, name: str, steps: int = 3) -> dict:  # noqa: ANN001
    body = {"base_model": base, "dataset": dataset, "name": name, "steps": steps, "rank": 4, "batch_size": 2}
    r = client.post("/api/finetune", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded", job
    return job


def test_audiogen_trains_on_its_own_codec_and_generates_sound(client, hub):
    music = make_dataset(client, "music", "musicgen-small", 32000)
    assert music["chroma"] is True  # a 32 kHz dataset keeps its windows' chroma
    # A dataset made with MusicGen's 32 kHz codec cannot teach AudioGen: said, with what to do.
    r = client.post("/api/finetune", json={"base_model": "audiogen-medium", "dataset": "music", "name": "fx"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "dataset_mismatch" and error["field"] == "dataset"
    assert "32000 Hz" in error["message"] and "16000 Hz" in error["message"]
    assert "model=audiogen-medium" in error["hint"]

    sounds = make_dataset(client, "sounds", "audiogen-medium", 16000)
    assert sounds["codec"]["sample_rate"] == 16000 and sounds["chroma"] is False
    # ... nor the other way round.
    r = client.post("/api/finetune", json={"base_model": "musicgen-small", "dataset": "sounds", "name": "m"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "dataset_mismatch"

    finetune(client, "audiogen-medium", "sounds", "fx")
    name = "audiogen-medium+fx"
    model = {m["name"]: m for m in client.get("/api/models").json()["models"]}[name]
    assert model["installed"] and model["base"] == "audiogen-medium" and model["finetune"]["steps"] == 3
    assert "sound" in model["capabilities"]
    audio = client.post(
        "/api/generate/sound", json={"prompt": "rain", "model": name, "duration": 0.5, "sample_rate": "native"}
    )
    assert audio.status_code == 200, audio.text
    assert audio.headers["x-model"] == name
    assert sf.info(io.BytesIO(audio.content)).samplerate == 16000


def test_melody_trains_on_the_windows_chroma_and_generates_from_a_melody(client, hub, tmp_path):
    make_dataset(client, "tunes", "musicgen-small", 32000)  # the codec MusicGen and Melody share
    finetune(client, "musicgen-melody", "tunes", "tunes")
    name = "musicgen-melody+tunes"
    model = {m["name"]: m for m in client.get("/api/models").json()["models"]}[name]
    assert model["base"] == "musicgen-melody" and "melody" in model["capabilities"]
    r = client.post(
        "/api/generate/melody",
        data={"prompt": "calm piano", "duration": "1", "model": name},
        files={"melody": ("theme.wav", wav(2.0, 440, 32000), "audio/wav")},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == name

    # A dataset without the chroma (built before melody training) is refused for a melody base.
    manifest = tmp_path / "data" / "datasets" / "tunes" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(data | {"chroma": False}))
    r = client.post("/api/finetune", json={"base_model": "musicgen-melody", "dataset": "tunes", "name": "old"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "dataset_mismatch" and "chroma" in r.json()["error"]["message"]


def test_an_adapter_for_another_base_is_refused(client, hub, tmp_path):
    """The AudioGen adapter offered as a MusicGen one (the tiny decoders have the same dims, not the
    same weights): refused, naming the base it was trained on; nothing is installed."""
    from server.hub import importer

    make_dataset(client, "sounds", "audiogen-medium", 16000)
    finetune(client, "audiogen-medium", "sounds", "fx", steps=1)
    loose = shutil.copytree(
        next((hub / "models--finetuned--audiogen-medium.fx" / "snapshots").iterdir()), tmp_path / "x"
    )
    with pytest.raises(importer.ImportFailed, match="trained on audiogen-medium, not musicgen-small"):
        importer.import_model(loose, hub, name="musicgen-small+fx")
    assert not (hub / "models--finetuned--musicgen-small.fx").exists()
    assert "musicgen-small+fx" not in {m["name"] for m in client.get("/api/models").json()["models"]}
