"""A full disk, for real: the data dir (and the models dir) on a tmpfs of a few MB (test/small_disk.py).

Whatever the disk refuses, the answer is a 507 that names the dir (never its path), every lane
stays alive (/health "ok"), no job is left queued or running, and once there is room the same
request works, with no restart. The fake full disk of test/unit/test_disk_faults.py covers each path
one by one where mounting is refused.
"""

from __future__ import annotations

from api_client import make_client, wait_job
from small_disk import MB, small_disk
from test_codec_api import audio_file
from test_models_api import NAME, hub  # noqa: F401 - the fixture: a hub on loopback


def music(client, seconds: float, **fields):
    body = {"prompt": "a full disk", "duration": seconds, "seed": 7, "sample_rate": "native", **fields}
    return client.post("/api/generate/music", json=body)


def encode(client, data: bytes):
    return client.post("/api/encode", files={"file": ("in.wav", data)})


def decode(client, data: bytes, **fields):
    return client.post("/api/decode", files={"file": ("in.ecdc", data)}, data={k: str(v) for k, v in fields.items()})


def assert_disk_full(r, where: str = "data dir") -> None:
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "disk_full" and where in err["message"] and "no restart" in err["hint"], err
    assert "/" not in err["message"].replace("(TMPDIR)", ""), err  # the dir's name, never its path


def assert_all_alive_and_nothing_stuck(client, tmp_path) -> None:
    assert client.get("/health").json()["status"] == "ok"  # every lane thread alive
    jobs = client.get("/api/jobs?limit=1000").json()["jobs"]
    assert all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs), jobs
    leftovers = [p for p in (tmp_path / "data").rglob("*.tmp")]
    assert leftovers == [], leftovers


def test_the_disk_filling_as_a_generation_is_written_fails_that_job_and_passes_by_itself(tiny_hub, tmp_path):
    with small_disk(tmp_path / "data", 16 * MB) as disk, make_client(tiny_hub, tmp_path, min_free_disk_mb=0) as c:
        assert music(c, 1).status_code == 200  # room: it works (and the model is loaded)
        # Room for the store's small writes, not for 3 s of float32 master audio (384 KB).
        disk.fill(leave=48 * 1024)
        r = music(c, 3)
        assert_disk_full(r)
        hit = c.get(f"/api/jobs/{r.headers['x-job-id']}").json()
        assert hit["state"] == "failed" and hit["started_at"] is not None  # it ran: the audio write failed
        assert hit["error"]["status"] == 507
        assert_all_alive_and_nothing_stuck(c, tmp_path)

        disk.fill()  # not a byte left: the submission, or the job's start, is refused the same way
        assert_disk_full(music(c, 1))
        r = c.post("/api/jobs", json=[{"kind": "music", "prompt": "bulk", "duration": 1}])
        if r.status_code == 202:  # the store's pages had room for the row: the job fails as it starts
            job = wait_job(c, r.json()["ids"][0])
            assert job["state"] == "failed" and job["error"]["status"] == 507, job
        else:
            assert_disk_full(r)
        assert_all_alive_and_nothing_stuck(c, tmp_path)

        disk.free()
        r = music(c, 1)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"  # no restart
        # The end the full store could not take is stored now.
        assert c.app.state.services.scheduler.store.get(hit["id"])["state"] == "failed"
        assert_all_alive_and_nothing_stuck(c, tmp_path)


def test_below_the_free_space_floor_new_work_is_refused_until_there_is_room(tiny_hub, tmp_path):
    with small_disk(tmp_path / "data", 16 * MB) as disk, make_client(tiny_hub, tmp_path, min_free_disk_mb=2) as c:
        disk.fill(leave=1 * MB)
        for r in (music(c, 1), encode(c, audio_file(0.5)), c.post("/api/jobs", json={"kind": "music", "prompt": "x"})):
            assert r.status_code == 507, r.text
            err = r.json()["error"]
            assert err["code"] == "low_disk_space" and "AUDIOCRAFT_MIN_FREE_DISK_MB" in err["hint"], err
            assert str(tmp_path) not in r.text
        assert c.get("/api/jobs").json()["total"] == 0  # nothing was queued (nor its input written)
        disk.free()
        assert music(c, 1).status_code == 200
        assert_all_alive_and_nothing_stuck(c, tmp_path)


def test_the_codec_lane_on_a_full_disk(tiny_hub, tmp_path):
    with small_disk(tmp_path / "data", 16 * MB) as disk, make_client(tiny_hub, tmp_path, min_free_disk_mb=0) as c:
        ecdc = encode(c, audio_file(2.0)).content
        assert ecdc[:4] == b"ECDC"
        # The .ecdc upload (a few KB) fits; its 2 s of 32-bit audio out (192 KB) does not.
        disk.fill(leave=32 * 1024)
        assert_disk_full(decode(c, ecdc, bit_depth=32))
        assert_disk_full(encode(c, audio_file(2.0)))  # the upload itself does not fit
        assert_all_alive_and_nothing_stuck(c, tmp_path)
        assert not list((tmp_path / "data" / "artifacts").rglob("upload.bin"))  # nothing held the space
        disk.free()
        r = decode(c, ecdc, bit_depth=32)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_a_download_onto_a_full_models_disk_fails_and_resumes_once_there_is_room(hub, tmp_path):  # noqa: F811
    models = tmp_path / "models"
    with small_disk(models, 1 * MB) as disk, make_client(models, tmp_path) as c:
        r = c.post(f"/api/models/{NAME}/download")
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job"]["id"])
        assert job["state"] == "failed", job
        err = job["error"]
        assert (err["status"], err["code"]) == (507, "disk_full") and "models dir" in err["message"], err
        assert str(tmp_path) not in str(err)
        assert c.get("/health").json()["status"] == "ok"

        disk.grow(64 * MB)  # space returns; nothing restarts
        before = len(hub.requests)
        r = c.post(f"/api/models/{NAME}/download")
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["job"]["id"])["state"] == "succeeded"
        assert c.get(f"/api/models/{NAME}").json()["installed"] is True
        resumed = [rng for method, _path, rng in hub.requests[before:] if method == "GET" and rng]
        assert resumed, "the file cut by the full disk was fetched again from the start"
