"""The CLI as the platform drives it (issue 14): installed as a symlink
`<bin>/resource-audiocraft -> <repo>/cli.sh` on PATH, and called the way its `resource list`,
`status` and `start-all` call it. Settings spelled the platform's way; the test runner's flag form.

The tests without a server run first; the e2e ones share one server (tiny models), in file order.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_cli_support import ROOT, Cli, Result, assert_clean_error, free_port, server_log, stop_leftover
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S

# The calls the platform makes, as it makes them (README's CLI section lists each of them).
PLATFORM_CALLS = (
    "help",
    "info --json",
    "status --format json --fast",
    "manage start --force",
    "start",
    "stop",
    "restart",
    "test smoke",
)


class LinkedCli(Cli):
    """The CLI installed the platform's way: a symlink on PATH to the repository's cli.sh, called by name."""

    def __init__(self, data_dir: Path, port: int, cwd: Path, bin_dir: Path, **env: str):
        super().__init__(data_dir, port, cwd, **env)
        bin_dir.mkdir(parents=True, exist_ok=True)
        self.link = bin_dir / "resource-audiocraft"
        self.link.symlink_to(ROOT / "cli.sh")
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"

    def __call__(self, *args: str, timeout: float = QUICK_HANG_GUARD_S, **env: str) -> Result:
        t0 = time.monotonic()
        p = subprocess.run(
            ["resource-audiocraft", *args],  # found on PATH: the link, as the platform runs it
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=self.cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


@pytest.fixture
def linked(tmp_path: Path) -> LinkedCli:
    work = tmp_path / "work"
    work.mkdir()
    return LinkedCli(tmp_path / "data", free_port(), cwd=work, bin_dir=tmp_path / "home" / ".local" / "bin")


def _status(r: Result) -> dict:
    assert r.out.startswith("{"), r.text
    data = json.loads(r.out)
    assert isinstance(data["running"], bool) and isinstance(data["healthy"], bool)
    return data


# -- 1. through a symlink ----------------------------------------------------------------------------


def test_help_through_the_link(linked):
    r = linked("help")
    assert r.code == 0, r.text
    for heading in ("Usage examples", "Available commands", "Default configuration"):
        assert heading in r.out
    commands = {line.split()[0] for line in r.out.split("Available commands")[1].splitlines()[1:] if line.strip()}
    assert {"start", "stop", "restart"} <= commands  # the top-level aliases are listed
    assert "status --format json --fast" in r.out


@pytest.mark.parametrize("script", ["cli.sh", "manage.sh"])
def test_links_to_links_relative_and_absolute(tmp_path, script):
    """A relative link to a link to the script, from another folder: both scripts find the repository."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "first").symlink_to(ROOT / script)
    (tmp_path / "b" / "resource-audiocraft").symlink_to(Path("..") / "a" / "first")
    p = subprocess.run(
        ["./resource-audiocraft", "--version"],
        cwd=tmp_path / "b",
        capture_output=True,
        text=True,
        timeout=QUICK_HANG_GUARD_S,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("resource-audiocraft ")


# -- 2. status --fast --------------------------------------------------------------------------------


def test_fast_status_not_running(linked):
    r = linked("status", "--format", "json", "--fast")
    assert r.code == 2, r.text
    data = _status(r)
    assert data["running"] is False and data["healthy"] is False
    assert data["port"] == linked.port


def test_fast_status_does_not_wait_on_a_service_that_hangs(linked):
    """Something listens on the port but never answers: --fast gives up after its short /health timeout."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        # No clock: the CLI must come back on its own (the call's timeout is a hang guard), having
        # tried the port once, not retried or gone on to slower checks.
        r = linked("status", "--format", "json", "--fast", AUDIOCRAFT_PORT=str(port))
        server.settimeout(0)
        connections = 0
        while True:
            try:
                server.accept()[0].close()
                connections += 1
            except BlockingIOError:
                break
    assert r.code == 2, r.text
    assert _status(r)["running"] is False
    assert connections == 1, connections


# -- 6. model names ----------------------------------------------------------------------------------


def test_unknown_model_name_in_the_cli_names_the_close_ones(linked):
    for args in (("models", "info", "musicgen-smal"), ("models", "pull", "musicgen-smal"), ("models", "rm", "smal")):
        r = linked(*args)
        assert_clean_error(r)
        assert "did you mean" in r.err and "musicgen-small" in r.err, r.err
    r = linked("manage", "install", "--with-model", "stereo-larg")
    assert_clean_error(r)
    assert "stereo-large (musicgen-stereo-large)" in r.err


# -- 7. info --json -----------------------------------------------------------------------------------


def test_info_json_names_the_service(linked):
    import tomllib

    from lib import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    r = linked("info", "--json")
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["name"] == project["name"] == "resource-audiocraft"
    assert data["description"] == project["description"]
    assert data["version"] == project["version"] == __version__
    assert data["port"] == linked.port and data["endpoint"] == f"http://127.0.0.1:{linked.port}"
    runtime = json.loads((ROOT / "config" / "runtime.json").read_text())
    assert {k: data[k] for k in runtime} == runtime
    other = free_port()
    assert json.loads(linked("info", "--json", "--port", str(other)).out)["port"] == other


# -- 4. settings the platform's way; a bad one does not stop help, status or stop ------------------


def test_uppercase_enum_settings_are_accepted(linked):
    env = {"AUDIOCRAFT_LOG_LEVEL": "INFO", "AUDIOCRAFT_DEVICE": "CPU", "AUDIOCRAFT_RUNTIME": "Native"}
    r = linked("help", **env)
    assert r.code == 0, r.text
    assert "warning" not in r.err
    assert "log_level              info" in r.out
    assert linked("status", "--format", "json", "--fast", **env).code == 2
    r = linked("content", "list", "--format", "json", **env)
    assert r.code == 0, r.text


def test_a_bad_setting_warns_in_help_status_and_stop(linked):
    bad = {"AUDIOCRAFT_DEVICE": "tpu"}
    for args, code in ((("help",), 0), (("status", "--json"), 2), (("stop",), 2), (("manage", "stop"), 2)):
        r = linked(*args, **bad)
        assert r.code == code, (args, r.text)
        assert "AUDIOCRAFT_DEVICE=tpu" in r.err and "using the default" in r.err, r.err
        assert "Traceback" not in r.text
    assert _status(linked("status", "--format", "json", "--fast", **bad))["running"] is False
    # Everywhere else it is still an error that names the variable.
    r = linked("content", "list", **bad)
    assert_clean_error(r)
    assert "AUDIOCRAFT_DEVICE" in r.err


# -- 5. test/run-tests.sh --smoke ----------------------------------------------------------------------


def test_run_tests_takes_the_flag_form(tmp_path):
    tests = tmp_path / "tests"
    for phase in ("unit", "integration", "smoke"):
        (tests / phase).mkdir(parents=True)
        (tests / phase / f"test_{phase}_ok.py").write_text(f"def test_{phase}():\n    assert True\n")
    env = {**os.environ, "TESTS_DIR": str(tests)}
    for form in ("smoke", "--smoke", "--unit", "--integration", "--all"):
        p = subprocess.run(
            ["bash", str(ROOT / "test" / "run-tests.sh"), form],
            env=env,
            capture_output=True,
            text=True,
            timeout=QUICK_HANG_GUARD_S,
        )
        assert p.returncode == 0, (form, p.stdout, p.stderr)
        assert "usage" not in p.stderr, (form, p.stderr)
        assert "passed" in p.stdout, (form, p.stdout)
    p = subprocess.run(["bash", str(ROOT / "test" / "run-tests.sh"), "--nope"], env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "usage" in p.stderr


# -- the platform's lifecycle, through the link, on one server (tiny models) ----------------------------


@pytest.fixture(scope="module")
def platform(tiny_hub, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-platform")
    (base / "work").mkdir()
    cli = LinkedCli(
        base / "data",
        free_port(),
        cwd=base / "work",
        bin_dir=base / "home" / ".local" / "bin",
        AUDIOCRAFT_MODELS_DIR=str(tiny_hub),
        AUDIOCRAFT_DEVICE="cpu",
        AUDIOCRAFT_LOG_LEVEL="INFO",  # the platform's spelling
    )
    yield cli
    stop_leftover(cli)


def _wait_healthy(cli: LinkedCli, timeout_s: float = QUICK_HANG_GUARD_S) -> dict:
    """Poll `status --format json --fast` until it says healthy (what the platform does after a start).
    The limit is a hang guard, not a time the start is expected to take on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = cli("status", "--format", "json", "--fast")
        data = _status(r)
        if r.code == 0:
            assert data["running"] is True and data["healthy"] is True
            return data
        assert time.monotonic() < deadline, r.text + server_log(cli)
        time.sleep(0.5)


def _pid(cli: LinkedCli) -> int:
    return json.loads((cli.data_dir / "server.pid").read_text())["pid"]


@pytest.mark.e2e
def test_p1_force_start_from_stopped(platform):
    assert platform("status", "--format", "json", "--fast").code == 2
    r = platform("manage", "start", "--force", timeout=QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text + server_log(platform)
    data = _wait_healthy(platform)
    assert data["pid"] == _pid(platform) and data["port"] == platform.port
    r = platform("status", "--format", "json", "--fast")
    assert r.code == 0, r.text


@pytest.mark.e2e
def test_p2_force_start_from_running_restarts_it(platform):
    before = _pid(platform)
    assert platform("manage", "start").code == 2  # without --force: the contract's "already running"
    r = platform("manage", "start", "--force", timeout=QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text + server_log(platform)
    assert "restarting" in r.err
    _wait_healthy(platform)
    assert _pid(platform) != before


@pytest.mark.e2e
def test_p3_top_level_start_stop_restart(platform):
    assert platform("start").code == 2  # running: the same exit code as `manage start`
    r = platform("stop", timeout=QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text
    assert platform("stop").code == 2
    assert platform("status", "--format", "json", "--fast").code == 2
    r = platform("start", timeout=QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text + server_log(platform)
    _wait_healthy(platform)
    before = _pid(platform)
    r = platform("restart", "--wait", "--timeout", "600", timeout=QUICK_HANG_GUARD_S + 600)
    assert r.code == 0, r.text + server_log(platform)
    assert _pid(platform) != before
    assert platform("status", "--format", "json", "--fast").code == 0


@pytest.mark.e2e
def test_p4_test_smoke_through_the_link_and_the_flag_form(platform):
    r = platform("test", "smoke", timeout=QUICK_HANG_GUARD_S + 60, SMOKE_BUDGET_S=str(int(QUICK_HANG_GUARD_S)))
    assert r.code == 0, r.text
    env = {**platform.env, "AUDIOCRAFT_PORT": str(platform.port), "SMOKE_BUDGET_S": str(int(QUICK_HANG_GUARD_S))}
    p = subprocess.run(
        ["bash", str(ROOT / "test" / "run-tests.sh"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_HANG_GUARD_S + 60,
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.e2e
def test_p5_model_aliases_in_the_cli(platform, tmp_path):
    r = platform("models", "list", "--format", "json")
    assert r.code == 0, r.text
    models = {m["name"]: m for m in json.loads(r.out)["models"]}
    assert models["musicgen-small"]["aliases"] == ["small"]
    assert models["musicgen-stereo-melody-large"]["aliases"] == ["stereo-melody-large"]
    r = platform("models", "list")
    assert r.code == 0 and "aliases" in r.out and "stereo-melody-large" in r.out
    r = platform("models", "info", "small", "--format", "json")
    assert r.code == 0, r.text
    assert json.loads(r.out)["name"] == "musicgen-small"
    out = tmp_path / "beat.wav"
    r = platform("generate", "music", "--model", "small", "--prompt", "a beat", "--duration", "0.5",
                 "--output", str(out), "--json", timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text + server_log(platform)
    assert json.loads(r.out)["model"] == "musicgen-small"
    # The service's 404 for an unknown name: its close matches, exit 1.
    r = platform("generate", "music", "--model", "musicgen-smal", "--prompt", "x", "--duration", "0.5")
    assert_clean_error(r)
    assert "did you mean musicgen-small" in r.err


@pytest.mark.e2e
def test_p9_stop(platform):
    r = platform("stop", timeout=QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text
    assert platform("stop").code == 2
    assert not (platform.data_dir / "server.pid").exists()


def test_readme_lists_the_platform_calls():
    readme = (ROOT / "README.md").read_text()
    cli_section = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    for call in PLATFORM_CALLS:
        assert f"resource-audiocraft {call}" in cli_section, call
    assert "cli.sh" in cli_section and "symlink" in cli_section
