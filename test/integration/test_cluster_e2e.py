"""Past one machine, for real: redis-server, an API node (`--role api`) and workers (`--role worker`)
as processes of their own, on tiny models, sharing one artifacts directory.

- A worker killed with SIGKILL in the middle of its batch loses nothing: its jobs are claimed by the
  other worker once their entries go unheartbeaten past the visibility timeout, and run again with
  their seeds; every job finishes once, with the audio a fresh run makes.
- Redis killed with SIGKILL and started again on its append-only file (fsync on every write) has
  every job it acknowledged; while it is away the API node answers 503 with a message that says so,
  and it recovers by itself.

No timed assertions: every wait follows progress (test/waiting.py).
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf
from redis_server import RedisServer, ensure_installed
from server_process import ServerProcess
from waiting import get_json, job_signature, wait_for_progress, wait_jobs

pytestmark = pytest.mark.e2e

EXACT = {"sample_rate": "native", "bit_depth": 32, "normalize": "none"}
VISIBILITY_S = 3.0


@pytest.fixture
def cluster(tiny_hub, tmp_path):
    """start(name, role, **settings) -> a started ServerProcess on the test's Redis; all stopped after."""
    why_not = ensure_installed()
    if why_not:
        pytest.skip(why_not)
    server = RedisServer(tmp_path / "redis").start()
    procs: list[ServerProcess] = []

    def start(name: str, role: str, **settings) -> ServerProcess:
        proc = ServerProcess(
            tiny_hub,
            tmp_path / name,
            role=role,
            queue_url=server.url(),
            artifacts_dir=tmp_path / "artifacts",  # the shared volume
            worker_id=name,
            queue_visibility_s=VISIBILITY_S,
            dtype="float32",
            **settings,
        )
        procs.append(proc)
        return proc.start()

    start.redis = server
    yield start
    for proc in procs:
        proc.kill()
    start.redis.stop()  # the one running now (a test may have started it again)


def records(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def owners(db: redis.Redis, ids: list[str]) -> dict[str, str | None]:
    return {i: db.hget(f"audiocraft:job:{i}", "owner") for i in ids}


def test_a_worker_killed_mid_batch_loses_no_job_and_each_finishes_once(cluster):
    api = cluster("api", "api")
    w1 = cluster("w1", "worker", max_batch=2)
    w2 = cluster("w2", "worker", max_batch=2)
    db = records(cluster.redis.url())
    bodies = [{"kind": "music", "prompt": f"cluster {i}", "duration": 12, "seed": 100 + i, **EXACT} for i in range(4)]
    with api.client() as c:
        ids = c.post("/api/jobs", json=bodies).json()["ids"]

        def both_mid_batch():
            jobs = [get_json(c, f"/api/jobs/{i}") for i in ids]
            held = owners(db, ids)
            running = {i: j for i, j in zip(ids, jobs, strict=True) if j["state"] == "running" and j["progress"] > 0.02}
            ready = {held[i] for i in running} == {"w1", "w2"}
            return (running if ready else None), tuple(job_signature(j) for j in jobs)

        running = wait_for_progress(both_mid_batch, "both workers to be in the middle of a batch")
        killed = [i for i in running if owners(db, [i])[i] == "w1"]
        w1.kill()  # SIGKILL: no goodbye, no hand-back; its entries stay pending until they go idle

        jobs = wait_jobs(c, ids, what="every job, the killed worker's too, to end")
        assert [j["state"] for j in jobs] == ["succeeded"] * 4, jobs
        stats = db.hgetall("audiocraft:stats")
        assert int(stats["finished"]) == 4 and int(stats.get("dropped", 0)) == 0  # each finished once
        assert int(stats["reclaimed"]) >= len(killed) >= 1
        attempts = {i: int(db.hget(f"audiocraft:job:{i}", "attempts")) for i in ids}
        assert all(attempts[i] == 2 for i in killed), attempts
        assert db.xpending("audiocraft:run:decode", "workers")["pending"] == 0
        assert c.get("/api/jobs").json()["total"] == 4

        for job_id, body in zip(ids, bodies, strict=True):
            audio = c.get(f"/api/jobs/{job_id}/audio")  # the API node serves what a worker wrote
            assert audio.status_code == 200 and sf.info(io.BytesIO(audio.content)).frames == 12 * 32000
            if job_id in killed:  # run again with its seed: the audio of a fresh run
                fresh = c.post("/api/jobs", json=body).json()["ids"][0]
                wait_jobs(c, [fresh])
                assert c.get(f"/api/jobs/{fresh}/audio").content == audio.content
    w2.terminate()


def test_redis_killed_and_restarted_on_its_aof_keeps_every_acknowledged_job(cluster, tmp_path):
    api = cluster("api", "api")
    cluster("w1", "worker", max_batch=1)
    redis_port = cluster.redis.port
    with api.client() as c:
        body = [{"kind": "music", "prompt": f"aof {i}", "duration": 8, "seed": i, **EXACT} for i in range(3)]
        answer = c.post("/api/jobs", json=body)
        assert answer.status_code == 202
        ids = answer.json()["ids"]  # acknowledged: fsynced in the append-only file before the answer

        cluster.redis.kill()
        away = c.get("/api/jobs")
        assert away.status_code == 503, away.text
        error = away.json()["error"]
        assert error["code"] == "queue_unavailable" and "cannot be reached" in error["message"]
        assert away.headers["Retry-After"]
        assert c.get("/health").status_code == 503

        cluster.redis = RedisServer(tmp_path / "redis", port=redis_port).start()  # the same directory: its AOF

        def answers_again():
            try:
                r = c.get("/api/jobs")
            except httpx.HTTPError:
                return None, ()
            return (r.json() if r.status_code == 200 else None), (r.status_code,)

        listed = wait_for_progress(answers_again, "the API node to answer again by itself", poll_s=0.2)
        assert listed["total"] == 3 and {j["id"] for j in listed["jobs"]} == set(ids)
        jobs = wait_jobs(c, ids, what="the jobs to end after Redis came back")
        assert [j["state"] for j in jobs] == ["succeeded"] * 3, jobs
        assert int(records(cluster.redis.url()).hget("audiocraft:stats", "finished")) == 3


def test_a_mix_runs_on_a_worker_from_the_tracks_the_api_node_kept(cluster):
    """The API node (no lanes) reads and keeps the tracks in the shared artifacts; a worker mixes them."""
    api = cluster("api", "api")
    cluster("w1", "worker", max_batch=1)
    with api.client() as c:
        music = c.post("/api/generate/music", json={"prompt": "drums", "duration": 0.5, **EXACT})
        assert music.status_code == 200, music.text
        master, rate = sf.read(io.BytesIO(music.content), dtype="float32")
        tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate)).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, tone, rate, format="WAV", subtype="FLOAT")
        tracks = [
            {"job": music.headers["x-job-id"]},
            {"audio_base64": base64.b64encode(buf.getvalue()).decode(), "offset_s": 0.5},
        ]
        r = c.post("/api/mix", json={"tracks": tracks, "format": "wav", **EXACT})
        assert r.status_code == 200, r.text
        mixed, mixed_rate = sf.read(io.BytesIO(r.content), dtype="float32")
        assert mixed_rate == rate
        np.testing.assert_allclose(mixed, np.concatenate([master, tone]), atol=1e-6)
        accepted = c.post("/api/mix", json={"tracks": tracks[:1], "async": True, **EXACT})
        assert accepted.status_code == 202, accepted.text
        job = wait_jobs(c, [accepted.json()["job"]["id"]])[0]
        assert job["state"] == "succeeded" and job["kind"] == "mix"
        again = c.get(f"/api/jobs/{job['id']}/audio")
        np.testing.assert_allclose(sf.read(io.BytesIO(again.content), dtype="float32")[0], master, atol=1e-6)
