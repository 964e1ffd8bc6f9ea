"""compose.yaml for real: Redis, an API node and two workers (`--scale worker=2`) from the project's
image, driven by Compose, generating audio.

Compose is `docker compose` when the engine has the plugin, else Debian's docker-compose 1.29
(test/docker/ensure-compose.sh installs it). Redis: no image registry is reachable here, so the
compose file's default (Docker Hub's redis) is replaced by Debian's redis-server built on the
registry-free base (test/docker/redis.Dockerfile) through REDIS_IMAGE, the variable a user would set
for a redis image of their own. The models: `models make-tiny` run in a worker container writes
musicgen-small, tiny, into the shared `models` volume, as `models pull` would write the real one.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from integration.test_cli_support import free_port
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S, get_json, wait_for_progress, wait_jobs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("AUDIOCRAFT_IMAGE", "resource-audiocraft:test")
BASE = os.environ.get("DOCKER_TEST_BASE_IMAGE", "audiocraft-base:bookworm")
REDIS_IMAGE = "audiocraft-redis:test"
PROJECT = f"audiocraft-test-compose-{os.getpid()}"


def compose_command() -> list[str] | str:
    """The command, or why there is none."""
    done = subprocess.run(["bash", str(ROOT / "test/docker/ensure-compose.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no compose"
    return done.stdout.split()


def docker_client():
    import docker

    return docker.from_env(timeout=QUICK_HANG_GUARD_S)


def build_redis_image() -> None:
    docker_client().images.build(
        path=str(ROOT / "test/docker"),
        dockerfile="redis.Dockerfile",
        tag=REDIS_IMAGE,
        buildargs={"BASE_IMAGE": BASE},
        rm=True,
    )


@pytest.fixture(scope="module")
def topology():
    """(base URL of the API node, compose(*args) -> CompletedProcess); all of it removed after."""
    command = compose_command()
    if isinstance(command, str):
        pytest.skip(command)
    build_redis_image()
    port = free_port()
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "AUDIOCRAFT_IMAGE": IMAGE,
        "REDIS_IMAGE": REDIS_IMAGE,
        "AUDIOCRAFT_PORT": str(port),
    }

    def compose(*args: str, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
        argv = [*command, "-f", str(ROOT / "compose.yaml"), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    made = compose("run", "--rm", "--no-deps", "worker", "models", "make-tiny", "--dir", "/models/hub",
                   "--name", "musicgen-small")  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    up = compose("up", "-d", "--scale", "worker=2")
    assert up.returncode == 0, up.stdout + up.stderr
    compose.base = f"http://127.0.0.1:{port}"
    try:
        yield compose
    finally:
        logs = compose("logs", "--no-color", "--tail", "40", timeout=QUICK_HANG_GUARD_S)
        print(logs.stdout[-6000:])  # shown when a test failed
        compose("down", "-v", "--remove-orphans", timeout=QUICK_HANG_GUARD_S)


def project_logs_bytes() -> int:
    """How much the project's containers have logged: the progress of their start."""
    containers = docker_client().containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"})
    return sum(len(c.logs()) for c in containers)


def test_the_compose_topology_serves_from_two_workers_and_generates_audio(topology):
    ps = topology("ps", timeout=QUICK_HANG_GUARD_S)
    assert ps.returncode == 0 and ps.stdout.count("worker") >= 2, ps.stdout
    with httpx.Client(base_url=topology.base, timeout=QUICK_HANG_GUARD_S) as c:

        def two_workers():
            try:
                report = c.get("/health").json().get("workers") or {}
            except (httpx.HTTPError, ValueError):
                report = {}
            ready = report.get("count") == 2 and all(w["installed"] for w in report["workers"])
            return (report if ready else None), (report.get("count"), project_logs_bytes())

        report = wait_for_progress(two_workers, "the API node to report two workers with the model")
        assert all(w["installed"] == ["musicgen-small"] for w in report["workers"])  # one shared volume

        body = {"prompt": "compose", "duration": 1, "seed": 3, "normalize": "none"}
        answer = c.post("/api/generate/music", json=body, timeout=HANG_GUARD_S)
        assert answer.status_code == 200, answer.text
        info = sf.info(io.BytesIO(answer.content))
        assert info.frames == info.samplerate and answer.headers["X-Job-Id"]  # 1 s

        bodies = [{"kind": "music", "prompt": f"compose {i}", "duration": 1, "seed": i} for i in range(4)]
        ids = c.post("/api/jobs", json=bodies).json()["ids"]
        jobs = wait_jobs(c, ids, what="the compose workers to run four jobs")
        assert [j["state"] for j in jobs] == ["succeeded"] * 4, jobs
        for job_id in ids:  # written by a worker, served by the API node: the shared artifacts volume
            audio = c.get(f"/api/jobs/{job_id}/audio")
            assert audio.status_code == 200 and sf.info(io.BytesIO(audio.content)).duration == 1.0
        loaded = get_json(c, "/health")["workers"]["models"]
        assert loaded == ["musicgen-small"]
