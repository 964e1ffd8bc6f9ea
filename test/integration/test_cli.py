"""The real CLI as a subprocess, without a server: every contract exit code that needs none.

Each test gets its own data dir and a free port (nothing listens there), so "not running" is real.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from test_cli_support import ROOT, Cli, assert_clean_error, free_port, write_wav
from waiting import QUICK_HANG_GUARD_S


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "data", free_port(), cwd=work)


# -- help / info -----------------------------------------------------------------------------------


def test_help_names_the_three_sections(cli):
    r = cli("help")
    assert r.code == 0, r.err
    for heading in ("Usage examples", "Available commands", "Default configuration"):
        assert heading in r.out
    for command in ("manage start", "content generate", "status", "logs", "credentials", "test"):
        assert command in r.out
    assert str(cli.port) in r.out  # the default configuration shows the effective settings
    assert r.cpu_seconds < 2.0, r.cpu_seconds  # its own start-up cost (no torch), whatever else runs


def test_dash_dash_help_and_version(cli):
    r = cli("--help")
    assert r.code == 0 and "manage" in r.out
    r = cli("manage", "--help")
    assert r.code == 0 and "install" in r.out and "uninstall" in r.out
    r = cli("--version")
    assert r.code == 0 and re.match(r"resource-audiocraft \d+\.\d+", r.out)


def test_info_json_is_runtime_json(cli):
    r = cli("info", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    runtime = json.loads((ROOT / "config" / "runtime.json").read_text())
    assert {k: data[k] for k in runtime} == runtime  # beside name, description, version, port (issue 14)
    assert 400 <= data["startup_order"] <= 599
    assert data["dependencies"] == []
    assert isinstance(data["startup_timeout"], int) and data["startup_timeout"] > 0
    assert re.fullmatch(r"\d+-\d+s", data["startup_time_estimate"])
    assert 1 <= data["recovery_attempts"] <= 5
    assert data["priority"] in ("critical", "high", "medium", "low")


def test_info_text(cli):
    r = cli("info")
    assert r.code == 0
    assert "startup_order" in r.out and "priority" in r.out


# -- status / stop / logs / credentials when nothing runs ------------------------------------------


def test_status_not_running_exits_2(cli):
    r = cli("status")
    assert r.code == 2, r.text
    assert "not running" in r.out
    assert r.cpu_seconds < 10, r.cpu_seconds


@pytest.mark.parametrize("args", [("status", "--json"), ("status", "--format", "json")])
def test_status_json_not_running(cli, args):
    r = cli(*args)
    assert r.code == 2
    assert r.out.startswith("{")
    data = json.loads(r.out)
    assert data["running"] is False and data["healthy"] is False
    assert data["port"] == cli.port
    assert data["endpoint"] == f"http://127.0.0.1:{cli.port}"
    for key in ("pid", "version", "device", "models", "queue"):
        assert key in data


def test_status_yaml_and_verbose(cli):
    r = cli("status", "--format", "yaml", "--verbose")
    assert r.code == 2
    data = yaml.safe_load(r.out)
    assert data["running"] is False
    assert data["data_dir"] == str(cli.data_dir)


def test_stop_not_running_exits_2(cli):
    r = cli("manage", "stop")
    assert r.code == 2, r.text
    assert "not running" in r.err


def test_stale_pid_file_is_not_running(cli):
    cli.data_dir.mkdir(parents=True)
    (cli.data_dir / "server.pid").write_text(json.dumps({"pid": 2**22 + 12345, "port": cli.port}))
    assert cli("status").code == 2
    assert cli("manage", "stop").code == 2
    assert not (cli.data_dir / "server.pid").exists()


def test_logs_none_exits_2(cli):
    r = cli("logs")
    assert r.code == 2
    assert "no logs" in r.err


def test_logs_tail_and_since(cli):
    log = cli.data_dir / "logs" / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "2001-01-01 00:00:00 INFO:     old line\n"
        "  an unstamped continuation of the old line\n"
        "2999-01-01 00:00:00 INFO:     future line one\n"
        "2999-01-01 00:00:01 INFO:     future line two\n"
    )
    r = cli("logs", "--tail", "2")
    assert r.code == 0
    assert r.out.splitlines() == [
        "2999-01-01 00:00:00 INFO:     future line one",
        "2999-01-01 00:00:01 INFO:     future line two",
    ]
    r = cli("logs", "--since", "1h")
    assert r.code == 0
    assert "old line" not in r.out and "continuation" not in r.out and "future line one" in r.out
    r = cli("logs", "--since", "2000-06-01T00:00", "--tail", "50")
    assert "old line" in r.out and "continuation" in r.out
    assert_clean_error(cli("logs", "--since", "yesterday-ish"))


def test_credentials(cli):
    r = cli("credentials")
    assert r.code == 2
    assert "AUDIOCRAFT_API_KEY" in r.err
    key = "k3y-abcdefghijklmnop"
    r = cli("credentials", AUDIOCRAFT_API_KEY=key)
    assert r.code == 0 and key not in r.out and "Bearer" in r.out
    r = cli("credentials", "--format", "json", "--show-secrets", AUDIOCRAFT_API_KEY=key)
    assert r.code == 0 and json.loads(r.out)["api_key"] == key
    r = cli("credentials", "--format", "env", AUDIOCRAFT_API_KEY=key)
    assert r.code == 0 and "AUDIOCRAFT_API_KEY=" in r.out and key not in r.out
    assert_clean_error(cli("credentials", "--format", "toml", AUDIOCRAFT_API_KEY=key))


# -- manage install / uninstall / start without a server -------------------------------------------


def _has_server_deps() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "transformers", "starlette", "uvicorn", "soundfile"))


@pytest.mark.skipif(not _has_server_deps(), reason="this interpreter's venv lacks the server extra")
def test_install_already_installed_exits_2(cli):
    r = cli("manage", "install", "--venv", sys.prefix)
    assert r.code == 2, r.text
    assert "already installed" in r.err


def test_install_unknown_model_is_refused(cli):
    assert_clean_error(cli("manage", "install", "--with-model", "no-such-model"))


def test_uninstall_not_installed_exits_2(cli, tmp_path):
    r = cli("manage", "uninstall", "--keep-data", "--venv", str(tmp_path / "no-venv"))
    assert r.code == 2, r.text


def test_uninstall_removes_venv_and_data(cli, tmp_path):
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    sample = write_wav(tmp_path / "a.wav")
    assert cli("content", "add", "--file", str(sample)).code == 0
    r = cli("manage", "uninstall", "--force", "--keep-data", "--venv", str(venv))
    assert r.code == 0, r.text
    assert not venv.exists()
    assert (cli.data_dir / "content" / "index.json").exists()  # --keep-data
    venv.mkdir()
    r = cli("manage", "uninstall", "--force", "--venv", str(venv))
    assert r.code == 0, r.text
    assert not (cli.data_dir / "content").exists()
    assert cli("manage", "uninstall", "--force", "--venv", str(venv)).code == 2


def test_start_without_install_fails_clearly(cli, tmp_path):
    r = cli("manage", "start", "--venv", str(tmp_path / "no-venv"))
    assert_clean_error(r)
    assert "manage install" in r.err


# -- content ---------------------------------------------------------------------------------------


def test_content_lifecycle(cli, tmp_path):
    wav = write_wav(tmp_path / "theme.wav", seconds=0.5)
    r = cli("content", "add", "--file", str(wav))
    assert r.code == 0, r.text
    # Same name again: 2 (already exists).
    r = cli("content", "add", "--file", str(wav))
    assert r.code == 2 and "already exists" in r.err
    r = cli("content", "add", "--file", str(wav), "--name", "theme-2", "--type", "audio")
    assert r.code == 0

    r = cli("content", "list", "--format", "json")
    assert r.code == 0
    items = {i["name"]: i for i in json.loads(r.out)}
    assert set(items) == {"theme", "theme-2"}
    assert items["theme"]["type"] == "audio" and items["theme"]["format"] == "wav"
    assert items["theme"]["duration_s"] == pytest.approx(0.5)

    r = cli("content", "list", "--filter", "*-2", "--format", "json")
    assert [i["name"] for i in json.loads(r.out)] == ["theme-2"]
    r = cli("content", "list", "--format", "yaml")
    assert yaml.safe_load(r.out)["total"] == 2
    r = cli("content", "list")
    assert r.code == 0 and "theme-2" in r.out

    r = cli("content", "get", "--name", "theme", "--format", "json")
    assert r.code == 0 and json.loads(r.out)["sha256"]
    out = tmp_path / "copy.wav"
    r = cli("content", "get", "--name", "theme", "--output", str(out))
    assert r.code == 0 and out.read_bytes() == wav.read_bytes()
    assert cli("content", "get", "--name", "nope").code == 2

    assert cli("content", "remove", "--name", "theme").code == 0
    assert cli("content", "remove", "--name", "theme").code == 2
    assert cli("content", "remove", "--name", "theme-2", "--force").code == 0
    r = cli("content", "list", "--format", "json")
    assert json.loads(r.out) == []


def test_content_bad_input(cli, tmp_path):
    assert_clean_error(cli("content", "add", "--file", str(tmp_path / "missing.wav")))
    assert_clean_error(cli("content", "add"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01not audio at all")
    assert_clean_error(cli("content", "add", "--file", str(junk)))
    wav = write_wav(tmp_path / "x.wav")
    assert_clean_error(cli("content", "add", "--file", str(wav), "--type", "video"))
    assert_clean_error(cli("content", "add", "--file", str(wav), "--name", "bad name/../x"))
    assert_clean_error(cli("content", "list", "--format", "csv"))
    bad_preset = tmp_path / "bad.json"
    bad_preset.write_text('{"type": "music"}')  # no prompt
    assert_clean_error(cli("content", "add", "--file", str(bad_preset)))


def test_content_execute(cli, tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    assert cli("content", "add", "--file", str(wav)).code == 0
    preset = tmp_path / "calm.json"
    preset.write_text(json.dumps({"type": "music", "prompt": "calm piano", "duration": 2}))
    r = cli("content", "add", "--file", str(preset))
    assert r.code == 0, r.text
    r = cli("content", "list", "--format", "json", "--type", "preset")
    assert [i["name"] for i in json.loads(r.out)] == ["calm"]
    # An audio item is not executable; neither is a name that does not exist.
    assert cli("content", "execute", "--name", "a").code == 2
    assert cli("content", "execute", "--name", "ghost").code == 2
    assert_clean_error(cli("content", "execute", "--name", "calm", "--options", "{not json"))
    # A real preset with the service down: one clear line, exit 1.
    r = cli("content", "execute", "--name", "calm", "--options", '{"seed": 3}')
    assert_clean_error(r)
    assert "not reachable" in r.err and "manage start" in r.err


# -- the service being down, bad flags --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("content", "generate", "--type", "music", "--prompt", "calm piano", "--duration", "5"),
        ("generate", "music", "--prompt", "calm piano"),
        ("models", "list"),
        ("jobs", "list"),
        ("jobs", "show", "abc"),
    ],
)
def test_service_down_is_one_clear_line(cli, args):
    r = cli(*args)
    assert_clean_error(r)
    assert "not reachable" in r.err and "manage start" in r.err


def test_server_flag_is_used(cli):
    port = free_port()
    r = cli("models", "list", "--server", f"http://127.0.0.1:{port}")
    assert_clean_error(r)
    assert str(port) in r.err
    assert_clean_error(cli("jobs", "list", "--server", "ftp://nowhere"))


@pytest.mark.parametrize(
    "args",
    [
        ("logs", "--tail", "abc"),
        ("status", "--format", "xml"),
        ("manage", "start", "--timeout", "soon"),
        ("manage", "stop", "--timeout", "-5"),
        ("no-such-command",),
        ("content", "generate", "--type", "poetry", "--prompt", "x"),
        ("content", "generate", "--type", "music"),
        ("content", "generate", "--type", "music", "--prompt", "x", "--duration", "0"),
        ("content", "generate", "--type", "music", "--prompt", "x", "--format", "aiff"),
        ("content", "generate", "--type", "melody", "--prompt", "x"),
        ("generate", "music", "--prompt", "x", "--output", "/no/such/dir/x.wav"),
        ("generate", "music", "--prompt", "x", "--bit-depth", "12"),
        ("jobs", "list", "--state", "sleeping"),
        ("test", "everything"),
        ("--runtime", "kubernetes", "status"),
    ],
)
def test_bad_flag_values_exit_1_without_traceback(cli, args):
    assert_clean_error(cli(*args))


def test_bad_setting_from_environment(cli):
    # (help, status and stop warn and go on instead: test_cli_platform.py)
    r = cli("content", "list", AUDIOCRAFT_PORT="not-a-port")
    assert_clean_error(r)
    assert "AUDIOCRAFT_PORT" in r.err


def test_global_flags_after_the_subcommand(cli):
    other = free_port()
    r = cli("status", "--json", "--port", str(other))
    assert r.code == 2 and json.loads(r.out)["port"] == other


# -- test command ------------------------------------------------------------------------------------


def test_test_unit_with_no_unit_tests_exits_2(cli, tmp_path):
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    r = cli("test", "unit", TESTS_DIR=str(tmp_path / "tests"))
    assert r.code == 2, r.text


def test_test_smoke_fails_fast_when_nothing_runs(cli):
    # A budget far above the quiet 30 s, so a loaded machine cannot run it out: the suite must fail by
    # itself, at its first probe, refused at once (ConnectError: it did not wait out a timeout).
    r = cli("test", "smoke", timeout=QUICK_HANG_GUARD_S + 60, SMOKE_BUDGET_S=str(int(QUICK_HANG_GUARD_S)))
    assert r.code == 1, r.text
    assert "no service answers" in r.text and "(ConnectError)" in r.text, r.text
    assert "did not finish within" not in r.text, r.text
