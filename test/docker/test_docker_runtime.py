"""The docker runtime for real: the CLI drives the server image through the Docker SDK.

Run by test/phases/test-docker.sh after it built the image (AUDIOCRAFT_IMAGE). Tiny random-weight
models are bind-mounted read-only as the container's hub cache; the container gets its own name and
volumes (audiocraft-test-*), so a user's `audiocraft` container is never touched.
"""

from __future__ import annotations

import io
import json
import os
import platform
import stat
import subprocess
import tempfile
import threading
import time
import wave
from pathlib import Path

import httpx
import pytest
from integration.test_cli_support import Cli, cli_command, free_port
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S, cpu_ticks, wait_for_progress

pytestmark = pytest.mark.e2e

# What `manage start --wait` may wait for health: far above a start-up on a loaded machine.
START_WAIT_S = "600"

IMAGE = os.environ.get("AUDIOCRAFT_IMAGE", "resource-audiocraft:test")
NAME = f"audiocraft-test-{os.getpid()}"


def docker_client():
    import docker

    return docker.from_env(timeout=QUICK_HANG_GUARD_S)


@pytest.fixture(scope="module")
def models_dir():
    """musicgen-small, tiny, in a world-readable directory (the container runs as uid 1000; pytest's
    own tmp dirs are 0700)."""
    from server.tiny.write import write_tiny_models

    d = Path(tempfile.mkdtemp(prefix="audiocraft-docker-models-"))
    write_tiny_models(d, names=["musicgen-small"])
    for p in [d, *d.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if p.is_dir() else 0))
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def live(models_dir, tmp_path_factory):
    """`--runtime docker manage start --wait` with the tiny models mounted read-only."""
    base = tmp_path_factory.mktemp("docker-live")
    work = base / "work"
    work.mkdir()
    cli = Cli(
        base / "data",
        free_port(),
        cwd=work,
        AUDIOCRAFT_RUNTIME="docker",
        AUDIOCRAFT_IMAGE=IMAGE,
        AUDIOCRAFT_CONTAINER_NAME=NAME,
        AUDIOCRAFT_MODELS_DIR=str(models_dir),
        AUDIOCRAFT_MODELS_READONLY="true",
        AUDIOCRAFT_DEVICE="cpu",
        AUDIOCRAFT_LOG_LEVEL="info",
    )
    t0 = time.monotonic()
    r = cli("manage", "start", "--wait", "--timeout", START_WAIT_S, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text + _logs()
    cli.start_seconds = time.monotonic() - t0
    yield cli
    client = docker_client()
    for obj in (client.containers, client.volumes):
        for name in (NAME, f"{NAME}-data", f"{NAME}-models"):
            try:
                obj.get(name).remove(force=True)
            except Exception:
                pass


def _logs() -> str:
    try:
        return "\n--- container log ---\n" + docker_client().containers.get(NAME).logs(tail=60).decode()
    except Exception as e:
        return f"\n(no container log: {e})"


def _container():
    return docker_client().containers.get(NAME)


def test_start_again_exits_2(live):
    r = live("manage", "start")
    assert r.code == 2, r.text
    assert "already running" in r.err and NAME in r.err


def test_status_json(live):
    r = live("status", "--json")
    assert r.code == 0, r.text + _logs()
    assert r.out.startswith("{")
    data = json.loads(r.out)
    assert data["running"] is True and data["healthy"] is True
    assert data["runtime"] == "docker" and data["container"] == NAME
    assert data["port"] == live.port and data["endpoint"] == f"http://127.0.0.1:{live.port}"
    assert data["device"] == "cpu" and data["version"]
    assert data["container_health"] in ("starting", "healthy")
    assert r.cpu_seconds < 10, r.cpu_seconds
    text = live("status")
    assert text.code == 0 and "healthy" in text.out and f"container {NAME}" in text.out


def test_container_as_specified(live, models_dir):
    c = _container()
    host = c.attrs["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["PortBindings"]["7862/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(live.port)}]
    assert host["Init"] is True
    assert c.attrs["Config"]["User"] == "audiocraft"  # not root
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/models/hub"]["Type"] == "bind" and mounts["/models/hub"]["RW"] is False
    assert mounts["/models/hub"]["Source"] == str(models_dir)
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == f"{NAME}-data"
    assert mounts["/models"]["Type"] == "volume" and mounts["/models"]["Name"] == f"{NAME}-models"
    assert len(mounts) == 3  # no anonymous volumes
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert env["AUDIOCRAFT_HOST"] == "0.0.0.0" and env["AUDIOCRAFT_PORT"] == "7862"
    assert env["AUDIOCRAFT_DATA_DIR"] == "/data" and env["HF_HOME"] == "/models"
    assert env["AUDIOCRAFT_DEVICE"] == "cpu"
    # Published on loopback only, the server in it (bound to 0.0.0.0) serves without a key on purpose.
    assert env["AUDIOCRAFT_ALLOW_UNAUTHENTICATED"] == "true" and "AUDIOCRAFT_API_KEY" not in env
    # Host-only settings stay on the host.
    for key in ("AUDIOCRAFT_MODELS_DIR", "AUDIOCRAFT_IMAGE", "AUDIOCRAFT_RUNTIME", "AUDIOCRAFT_CONTAINER_NAME"):
        assert key not in env
    assert c.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert c.image.labels.get("io.resource-audiocraft.torch") == "cpu"


def test_music_through_the_published_port_is_a_wav(live):
    r = httpx.post(
        f"http://127.0.0.1:{live.port}/api/generate/music",
        json={"prompt": "calm piano", "duration": 2, "seed": 3},
        timeout=HANG_GUARD_S,
    )
    assert r.status_code == 200, r.text[:500] + _logs()
    assert r.headers["content-type"].startswith("audio/wav")
    assert r.headers["x-seed"] == "3"
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getnchannels() == 1 and w.getframerate() == 44100
        assert abs(w.getnframes() / w.getframerate() - 2.0) < 0.05


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the image prebuilds the kernels for x86-64 only")
def test_the_image_runs_its_prebuilt_kernels(live):
    """After a generation, the engine in the container runs the kernels the image built (it has no compiler)."""
    r = httpx.get(f"http://127.0.0.1:{live.port}/health", timeout=HANG_GUARD_S)
    native = r.json()["cpu"]["native"]
    assert native["kernels"] == "native", str(native) + _logs()
    assert native["path"].startswith("/opt/native/")


def test_content_generate_through_the_cli(live, tmp_path):
    out = tmp_path / "x.wav"
    r = live(
        "content", "generate", "--type", "music", "--prompt", "drums", "--duration", "1", "--output", str(out),
        timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.text + _logs()
    with wave.open(str(out)) as w:
        assert abs(w.getnframes() / w.getframerate() - 1.0) < 0.05
    # The content store is the host's data dir, as with the native runtime.
    listed = json.loads(live("content", "list", "--format", "json").out)
    assert any(i["source"] == "generated" for i in listed)


def test_logs(live):
    r = live("logs", "--tail", "20")
    assert r.code == 0, r.text
    lines = r.out.splitlines()
    assert 1 <= len(lines) <= 20
    assert "POST /api/generate/music" in r.out
    r = live("logs", "--since", "10m", "--tail", "1000")
    assert r.code == 0 and "Application startup complete" in r.out
    assert live("logs", "--tail", "0").out == ""


def test_logs_follow_streams_new_lines(live):
    proc = subprocess.Popen(
        [*cli_command(), "logs", "--tail", "0", "--follow"],
        env=live.env,
        cwd=live.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    asked = [0.0]

    def streamed() -> tuple[bool, tuple]:
        # A request now and then makes a new line, whenever the follower got attached (its start-up is
        # slower on a loaded machine); the follower's CPU time and output are its progress.
        if time.monotonic() - asked[0] > 1.0:
            httpx.get(f"http://127.0.0.1:{live.port}/api/models", timeout=QUICK_HANG_GUARD_S).raise_for_status()
            asked[0] = time.monotonic()
        return any("GET /api/models" in line for line in lines), (len(lines), cpu_ticks(proc.pid))

    try:
        wait_for_progress(streamed, "`logs --follow` to stream a new request's line")
    finally:
        proc.terminate()
        proc.wait(QUICK_HANG_GUARD_S)


def test_models_pull_goes_to_the_container_cache(live):
    # An installed model is a no-op; the models dir is mounted read-only here, so pulling a model
    # that is not there says so, at once, without a traceback.
    r = live("models", "pull", "musicgen-small")
    assert r.code == 0 and "already installed" in r.err, r.text
    r = live("models", "pull", "musicgen-medium")
    assert r.code == 1 and "read-only" in r.err and "Traceback" not in r.err, r.text


def test_install_again_exits_2(live):
    r = live("manage", "install")
    assert r.code == 2, r.text
    assert "already installed" in r.err


def test_z1_restart(live):
    r = live("manage", "restart", "--wait", "--timeout", START_WAIT_S, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text + _logs()
    assert live("status").code == 0


def test_z2_stop_then_stop_again(live):
    # stop honours its own bound: --timeout to drain, then the kill; the rest is start-up margin.
    r = live("manage", "stop", "--timeout", "120", timeout=120 + 10 + QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text
    assert "stopped" in r.err and "killed" not in r.err  # the server drained and exited on SIGTERM
    assert _container().status == "exited"
    assert live("manage", "stop").code == 2
    r = live("status", "--json")
    assert r.code == 2 and json.loads(r.out)["running"] is False
    # The stopped container keeps its log.
    r = live("logs", "--tail", "5")
    assert r.code == 0 and r.out.strip()
    # --force on a running container kills it.
    assert live("manage", "start", "--wait", "--timeout", START_WAIT_S, timeout=HANG_GUARD_S).code == 0
    r = live("manage", "stop", "--force")
    assert r.code == 0 and "killed" in r.err
    assert live("manage", "stop").code == 2


def test_z3_uninstall(live):
    """uninstall --keep-data removes the container and the image but keeps the volumes; without it the
    volumes go too; then there is nothing left (2). Done on a second tag of the image, so the phase's
    image (and its build cache) stays for the next run."""
    client = docker_client()
    alias = f"resource-audiocraft:uninstall-{os.getpid()}"
    client.images.get(IMAGE).tag(alias)
    assert (
        live("manage", "start", "--wait", "--timeout", START_WAIT_S, AUDIOCRAFT_IMAGE=alias, timeout=HANG_GUARD_S).code
        == 0
    )
    r = live("manage", "uninstall", "--force", "--keep-data", AUDIOCRAFT_IMAGE=alias, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text
    names = {c.name for c in client.containers.list(all=True)}
    assert NAME not in names
    assert alias not in {t for i in client.images.list() for t in i.tags}
    assert client.volumes.get(f"{NAME}-data") and client.volumes.get(f"{NAME}-models")
    assert client.images.get(IMAGE)  # the other tag is untouched
    r = live("manage", "uninstall", "--force", AUDIOCRAFT_IMAGE=alias, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text
    assert f"volume {NAME}-data" in r.err and f"volume {NAME}-models" in r.err
    assert live("manage", "uninstall", "--force", AUDIOCRAFT_IMAGE=alias).code == 2
    assert live("status").code == 2
    assert live("logs").code == 2
