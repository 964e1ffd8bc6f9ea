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
from server_process import ServerProcess, free_port
from waiting import get_json, job_signature, wait_for_progress, wait_jobs

pytestmark = pytest.mark.e2e

EXACT = {"sample_rate": "native", "bit_depth": 32, "normalize": "none"}
VISIBILITY_S = 3.0


@pytest.fixture
def cluster(tiny_hub, tmp_path):
    """start(name, role, models_dir=tiny_hub, **settings) -> a started ServerProcess on the test's Redis;
    all stopped after."""
    why_not = ensure_installed()
    if why_not:
        pytest.skip(why_not)
    server = RedisServer(tmp_path / "redis").start()
    procs: list[ServerProcess] = []

    def start(name: str, role: str, models_dir=None, **settings) -> ServerProcess:
        proc = ServerProcess(
            models_dir or tiny_hub,
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


def test_jobs_go_to_the_worker_that_has_their_model_and_the_api_node_reports_the_workers(cluster, tmp_path):
    """Two workers with model caches of their own: w1's holds musicgen-small, w2's is empty."""
    from server.tiny.write import write_tiny_models

    one_model = tmp_path / "hub-w1"
    write_tiny_models(one_model, names=["musicgen-small"])
    (tmp_path / "hub-w2").mkdir()
    api = cluster("api", "api", auto_download="false")
    cluster("w1", "worker", max_batch=2, models_dir=one_model)
    cluster("w2", "worker", max_batch=2, models_dir=tmp_path / "hub-w2")
    with api.client() as c:

        def both_report():
            report = get_json(c, "/health").get("workers") or {}
            names = [w["name"] for w in report.get("workers", [])]
            return (report if names == ["w1", "w2"] else None), tuple(names)

        report = wait_for_progress(both_report, "both workers to heartbeat")
        assert report["count"] == 2 and report["total_slots"] >= 4  # decode 2 + codec + download, each
        by_name = {w["name"]: w for w in report["workers"]}
        assert by_name["w1"]["installed"] == ["musicgen-small"] and by_name["w2"]["installed"] == []
        assert by_name["w1"]["lanes"]["decode"]["capacity"] == 2 and by_name["w1"]["heartbeat_age_s"] >= 0

        models = {m["name"]: m for m in c.get("/api/models").json()["models"]}  # installed: on a worker
        assert models["musicgen-small"]["installed"] and not models["musicgen-medium"]["installed"]

        bodies = [{"kind": "music", "prompt": f"placed {i}", "duration": 2, "seed": i} for i in range(3)]
        ids = c.post("/api/jobs", json=bodies).json()["ids"]
        jobs = wait_jobs(c, ids, what="the jobs to run on the worker that has the model")
        assert [j["state"] for j in jobs] == ["succeeded"] * 3, jobs

        def loaded_on_w1():
            workers = {w["name"]: w for w in get_json(c, "/health")["workers"]["workers"]}
            loaded = workers["w1"]["loaded"]
            return (workers if loaded == ["musicgen-small"] else None), tuple(loaded)

        workers = wait_for_progress(loaded_on_w1, "w1 to report the model it loaded")
        assert workers["w2"]["loaded"] == []  # w2 never loaded it: it cannot

        missing = c.post("/api/generate/music", json={"prompt": "x", "model": "musicgen-medium", "duration": 1})
        assert missing.status_code == 409 and missing.json()["error"]["code"] == "model_not_installed"


def _free_base_port() -> int:
    """A base for honcho's ports (base, +100, +200, +201) with all four free now."""
    import socket

    for _ in range(50):
        base = free_port()
        if base + 201 >= 65535:
            continue
        try:
            for port in (base, base + 100, base + 200, base + 201):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no four free ports for the cluster")


def test_the_local_cluster_procfile_runs_redis_an_api_node_and_two_workers(tiny_hub, tmp_path):
    """`make run-cluster`'s Procfile (config/cluster.Procfile) under honcho, as the target runs it."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    why_not = ensure_installed()
    if why_not:
        pytest.skip(why_not)
    root = Path(__file__).resolve().parents[2]
    base = _free_base_port()
    (tmp_path / "redis").mkdir()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CLUSTER_DIR": str(tmp_path),
        "AUDIOCRAFT_HOST": "127.0.0.1",
        "AUDIOCRAFT_QUEUE_URL": f"redis://127.0.0.1:{base}/0",
        "AUDIOCRAFT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "AUDIOCRAFT_MODELS_DIR": str(tiny_hub),
        "AUDIOCRAFT_DEVICE": "cpu",
        "AUDIOCRAFT_DTYPE": "float32",
    }
    honcho = shutil.which("honcho", path=str(bin_dir)) or "honcho"
    log = (tmp_path / "cluster.log").open("wb")
    argv = [honcho, "-f", str(root / "config/cluster.Procfile"), "start", "-p", str(base), "-c", "worker=2"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{base + 100}", timeout=30) as c:

            def two_workers():
                try:
                    report = c.get("/health").json().get("workers") or {}
                except (httpx.HTTPError, ValueError):
                    report = {}
                size = (tmp_path / "cluster.log").stat().st_size
                return (report if report.get("count") == 2 else None), (report.get("count"), size)

            report = wait_for_progress(two_workers, "the API node to see both workers")
            assert {w["name"] for w in report["workers"]} == {f"worker-{base + 200}", f"worker-{base + 201}"}
            answer = c.post("/api/generate/music", json={"prompt": "local cluster", "duration": 1}, timeout=1800)
            info = sf.info(io.BytesIO(answer.content))
            assert answer.status_code == 200 and info.frames == info.samplerate  # 1 s
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # as Ctrl-C in a terminal: honcho stops every process
        proc.wait(timeout=120)
        log.close()
    text = (tmp_path / "cluster.log").read_text(errors="replace")
    assert all(f"{name} stopped" in text for name in ("redis.1", "api.1", "worker.1", "worker.2")), text[-3000:]


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
