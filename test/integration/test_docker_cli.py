"""The docker runtime without a Docker engine: its container and build configuration (against a fake
SDK client), the Dockerfile's promises, and the CLI's behaviour when no engine answers. The real thing
runs in the docker phase (test/docker/, test/phases/test-docker.sh)."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from docker.errors import ImageNotFound, NotFound
from test_cli_support import ROOT, Cli, assert_clean_error, free_port

import cli.runtime.docker as docker_rt
from cli.errors import CliError
from cli.runtime.docker import DockerRuntime, host_pip_config, is_remote_ref, torch_pin
from lib.settings import Settings

NO_ENGINE = "unix:///nonexistent/docker.sock"


class _Missing:
    def __init__(self, exc):
        self.exc = exc

    def get(self, name):
        raise self.exc(f"{name} not found")


class FakeClient:
    """Just enough of docker.DockerClient: an image with labels, no container, no volumes."""

    def __init__(self, nvidia: bool = False, image_labels: dict | None = None, has_image: bool = True):
        self._info = {"Runtimes": {"runc": {}, **({"nvidia": {}} if nvidia else {})}}
        labels = image_labels if image_labels is not None else {"io.resource-audiocraft.torch": "cpu"}
        image = SimpleNamespace(labels=labels, tags=["resource-audiocraft:latest"])
        self.images = SimpleNamespace(get=lambda name: image) if has_image else _Missing(ImageNotFound)
        self.containers = _Missing(NotFound)
        self.volumes = _Missing(NotFound)

    def info(self):
        return self._info


def runtime(tmp_path: Path, client: FakeClient | None = None, **settings) -> DockerRuntime:
    s = Settings(data_dir=tmp_path / "data", **settings)
    return DockerRuntime(s, client=client or FakeClient())


# -- the container ---------------------------------------------------------------------------------


def test_container_config_defaults(tmp_path):
    cfg = runtime(tmp_path).container_config()
    assert cfg["name"] == "audiocraft"
    assert cfg["image"] == "resource-audiocraft:latest"
    assert cfg["ports"] == {"7862/tcp": ("127.0.0.1", 7862)}  # published on loopback only by default
    assert cfg["restart_policy"] == {"Name": "unless-stopped"}
    assert cfg["volumes"] == {
        "audiocraft-data": {"bind": "/data", "mode": "rw"},
        "audiocraft-models": {"bind": "/models", "mode": "rw"},
    }
    assert cfg["init"] is True and cfg["detach"] is True
    assert cfg["device_requests"] == []
    env = cfg["environment"]
    assert env["AUDIOCRAFT_HOST"] == "0.0.0.0" and env["AUDIOCRAFT_PORT"] == "7862"
    assert env["AUDIOCRAFT_DATA_DIR"] == "/data" and env["HF_HOME"] == "/models"
    assert env["AUDIOCRAFT_MAX_BATCH"] == "4"  # the server's settings go along
    for host_only in ("AUDIOCRAFT_MODELS_DIR", "AUDIOCRAFT_IMAGE", "AUDIOCRAFT_RUNTIME", "AUDIOCRAFT_TORCH"):
        assert host_only not in env


def test_container_config_settings(tmp_path):
    models = tmp_path / "hub"
    models.mkdir()
    rt = runtime(
        tmp_path, host="0.0.0.0", port=9000, models_dir=models, models_readonly=True, container_name="ac2",
        device="cpu", max_batch=2, api_key="k3y",
    )  # fmt: skip
    cfg = rt.container_config()
    assert cfg["name"] == "ac2"
    assert cfg["ports"] == {"7862/tcp": ("0.0.0.0", 9000)}
    assert cfg["volumes"] == {
        "ac2-data": {"bind": "/data", "mode": "rw"},
        "ac2-models": {"bind": "/models", "mode": "rw"},
        str(models.resolve()): {"bind": "/models/hub", "mode": "ro"},
    }
    env = cfg["environment"]
    assert env["AUDIOCRAFT_DEVICE"] == "cpu" and env["AUDIOCRAFT_MAX_BATCH"] == "2"
    assert env["AUDIOCRAFT_API_KEY"] == "k3y"
    assert env["AUDIOCRAFT_PORT"] == "7862"  # inside, always 7862


@pytest.mark.parametrize(
    "settings,opt_out",
    [
        ({}, "true"),  # published on 127.0.0.1: the server in it binds 0.0.0.0 and is told that is fine
        ({"host": "localhost"}, "true"),
        ({"host": "::1"}, "true"),
        ({"api_key": "k3y"}, "False"),  # with a key nothing needs the opt-out
        ({"host": "0.0.0.0", "api_key": "k3y"}, "False"),
        ({"host": "0.0.0.0", "allow_unauthenticated": True}, "true"),  # the user's own opt-out goes along
    ],
)
def test_the_container_serves_without_a_key_only_when_published_on_loopback(tmp_path, settings, opt_out):
    env = runtime(tmp_path, **settings).container_config()["environment"]
    assert env["AUDIOCRAFT_HOST"] == "0.0.0.0"
    assert env["AUDIOCRAFT_ALLOW_UNAUTHENTICATED"] == opt_out


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.5"])
def test_publishing_beyond_loopback_without_a_key_is_refused_before_any_container_runs(tmp_path, host):
    client = FakeClient()
    rt = runtime(tmp_path, client=client, host=host)
    with pytest.raises(CliError) as err:
        rt.start()  # the fake engine cannot run a container: reaching it would fail otherwise
    assert "without an API key" in err.value.message
    assert "AUDIOCRAFT_API_KEY" in err.value.hint and "AUDIOCRAFT_ALLOW_UNAUTHENTICATED=true" in err.value.hint


def test_models_dir_must_exist(tmp_path):
    with pytest.raises(CliError, match="not a directory"):
        runtime(tmp_path, models_dir=tmp_path / "missing").container_config()


def test_not_installed_says_how(tmp_path):
    with pytest.raises(CliError, match="not installed: no image") as e:
        runtime(tmp_path, client=FakeClient(has_image=False)).container_config()
    assert "--runtime docker manage install" in e.value.hint


def test_gpus_with_the_nvidia_runtime(tmp_path, capsys):
    reqs = runtime(tmp_path, client=FakeClient(nvidia=True, image_labels={})).container_config()["device_requests"]
    assert len(reqs) == 1 and reqs[0]["Count"] == -1 and reqs[0]["Capabilities"] == [["gpu"]]
    # A CPU image on a GPU host: a warning, the GPUs still passed.
    rt = runtime(tmp_path, client=FakeClient(nvidia=True))
    assert len(rt.container_config()["device_requests"]) == 1
    assert "CPU torch" in capsys.readouterr().err
    # --device cpu: none.
    assert runtime(tmp_path, client=FakeClient(nvidia=True), device="cpu").container_config()["device_requests"] == []


def test_no_nvidia_runtime_notes_cpu_or_fails_for_cuda(tmp_path, capsys):
    assert runtime(tmp_path).container_config()["device_requests"] == []
    assert "no NVIDIA runtime" in capsys.readouterr().err
    with pytest.raises(CliError, match="no NVIDIA runtime"):
        runtime(tmp_path, device="cuda").container_config()


# -- the build -------------------------------------------------------------------------------------


def test_build_args(tmp_path):
    assert runtime(tmp_path).build_args() == {"TORCH": "cpu", "TORCH_VERSION": torch_pin()}
    args = runtime(tmp_path, client=FakeClient(nvidia=True), base_image="audiocraft-base:bookworm").build_args()
    assert args == {"BASE_IMAGE": "audiocraft-base:bookworm", "TORCH": "cuda", "TORCH_VERSION": torch_pin()}
    assert runtime(tmp_path, torch="cu128").build_args()["TORCH"] == "cu128"
    with pytest.raises(ValueError):
        Settings(torch="metal")


def test_dockerfile_torch_default_is_the_pyproject_pin():
    text = (ROOT / "Dockerfile").read_text()
    default = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M).group(1)
    assert torch_pin() and default == torch_pin()


def test_build_context_adds_pip_cert_and_torch_wheels_only_to_the_tar(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    pin = torch_pin()
    (links / f"torch-{pin}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")
    (links / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"other")
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    rt = runtime(tmp_path)
    before = sorted(p.name for p in (ROOT / "wheels").iterdir())
    ctx, added = rt.build_context({"cert": [str(cert)], "find-links": [str(links), "https://example.org/x"]})
    with tarfile.open(fileobj=ctx) as t:
        names = set(t.getnames())
        assert t.extractfile("wheels/ca-bundle.crt").read() == cert.read_bytes()
    assert sorted(p.name for p in (ROOT / "wheels").iterdir()) == before  # nothing written to the checkout
    assert len(added) == 2
    assert f"wheels/torch-{pin}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in names
    assert not any(n.startswith("wheels/numpy") for n in names)
    for needed in ("Dockerfile", "pyproject.toml", "README.md", "cli/main.py", "server/main.py", "lib/settings.py"):
        assert needed in names
    for name in names:
        assert not name.startswith((".venv", ".git/", "test/", ".cache", "data/")), name
        assert "__pycache__" not in name


def test_host_pip_config_parsing(monkeypatch):
    listing = (
        "global.cert='/etc/ssl/certs/ca.crt'\n"
        "global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple'\n"
        "global.find-links='/opt/wheels'\n"
        ":env:.find-links='/opt/wheels'\n"
        ":env:.default-timeout='180'\n"
    )
    monkeypatch.setattr(
        docker_rt.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing, stderr="")
    )
    assert host_pip_config() == {
        "cert": ["/etc/ssl/certs/ca.crt"],
        "extra-index-url": ["file:///opt/pypi/simple", "https://mirror.example/simple"],
        "find-links": ["/opt/wheels"],
    }


def test_remote_refs_are_pulled_local_tags_built():
    assert is_remote_ref("ghcr.io/acme/audiocraft:1.0")
    assert is_remote_ref("localhost:5000/audiocraft")
    assert not is_remote_ref("resource-audiocraft:latest")
    assert not is_remote_ref("acme/audiocraft:1.0")


def test_dockerfile_promises():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^ARG TORCH=cpu$", text, re.M)
    assert re.search(r"^USER audiocraft$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/health" in text
    assert 'VOLUME ["/models", "/data"]' in text and "EXPOSE 7862" in text
    # The final stage never copies build inputs (the CA bundle, wheels).
    final = text[text.rindex("\nFROM ") :]
    assert "wheels" not in final.replace("/tmp/dist", "")
    # torch is installed before pyproject.toml is copied: a dependency change keeps the torch layer,
    # and the code comes after both.
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("COPY pyproject.toml") < text.index("COPY cli/")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "data", ".cache", "test"):
        assert entry in ignored


# -- the CLI without an engine ---------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "data", free_port(), cwd=work, DOCKER_HOST=NO_ENGINE)


@pytest.mark.parametrize(
    "args",
    [
        ("--runtime", "docker", "manage", "start"),
        ("status", "--runtime", "docker"),
        ("--runtime", "docker", "manage", "install"),
        ("--runtime", "docker", "logs"),
    ],
)
def test_docker_without_an_engine_is_one_clear_line(cli, args):
    r = cli(*args)
    assert_clean_error(r)
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, r.err
    assert "no Docker engine answers" in r.err and "--runtime native" in r.err
    assert cli("manage", "start", AUDIOCRAFT_RUNTIME="docker").code == 1


def test_auto_falls_back_to_native_without_an_engine(cli):
    r = cli("status", "--json", AUDIOCRAFT_RUNTIME="auto")
    assert r.code == 2, r.text
    assert json.loads(r.out)["runtime"] == "native"


def test_runtime_flag_names_the_choice(cli):
    r = cli("--help")
    assert "auto = docker when an engine answers" in r.out


def test_docker_phase_skips_with_the_reason_when_no_engine_can_run(tmp_path):
    """No engine answers, no dockerd to start, not root: the phase says SKIPPED and why, and exits 2."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\nexit 1\n")  # a client whose engine never answers
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "TEST_PYTHON": "/bin/false"}
    r = subprocess.run(
        ["bash", str(ROOT / "test" / "phases" / "test-docker.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "docker phase SKIPPED: no Docker engine: dockerd is not installed" in r.stderr
