"""The CLI's parts, in-process: start-up cost, flag handling, logs, the settings schema."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import typer
from fresh_imports import packages_loaded_by, run_fresh

from cli import generation, logtools, schema
from cli.client import api_error, normalize_server
from cli.errors import CliError
from cli.main import app, hoist_global_options, run
from cli.runtime import resolve_runtime_name
from cli.runtime.native import settings_env
from lib.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_cli_starts_without_torch_or_the_server():
    heavy = {"torch", "transformers", "numpy", "server", "starlette", "uvicorn", "soundfile"}
    assert packages_loaded_by("import cli.main") & heavy == set()


def test_config_schema_json_is_up_to_date():
    committed = (ROOT / "config" / "schema.json").read_text()
    assert committed == schema.render(), "config/schema.json is stale: run `python -m cli.schema`"
    data = json.loads(committed)
    assert data["properties"]["port"]["default"] == 7862
    assert data["properties"]["port"]["x-env"] == "AUDIOCRAFT_PORT"


def test_schema_check_mode():
    assert schema.main(["--check"]) == 0


def _group():
    return typer.main.get_command(app)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status", "--json"], ["status", "--json"]),
        (["status", "--port", "9", "--json"], ["--port", "9", "status", "--json"]),
        (["--port", "5", "status", "--port", "7"], ["--port", "5", "--port", "7", "status"]),
        (["content", "list", "--data-dir=/x"], ["--data-dir=/x", "content", "list"]),
        (["serve", "--port", "9"], ["serve", "--port", "9"]),  # serve has its own --port
        (["logs", "--debug", "--tail", "3"], ["--debug", "logs", "--tail", "3"]),
        (["nope", "--port", "1"], ["nope", "--port", "1"]),
        (["content", "add", "--", "--port"], ["content", "add", "--", "--port"]),
    ],
)
def test_hoist_global_options(argv, expected):
    assert hoist_global_options(_group(), argv) == expected


def test_run_returns_contract_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUDIOCRAFT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AUDIOCRAFT_PORT", "1")
    assert run(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["startup_order"] == 500
    assert run(["content", "get", "--name", "x"]) == 2
    assert run(["logs", "--tail", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--tail" in err


def test_model_file_commands_without_the_server_extra_say_what_to_install(tmp_path):
    """The in-process model commands import the hub plainly; without huggingface_hub (no `server`
    extra) they end with a CliError that names the fix, not a traceback."""
    code = (
        "import sys\n"
        "sys.modules['huggingface_hub'] = None  # as if not installed: importing it raises ImportError\n"
        "from cli.main import run\n"
        f"d = {str(tmp_path)!r}\n"
        "print(run(['models', 'import', d]), run(['models', 'make-tiny', '--dir', d]))\n"
    )
    r = run_fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1"]
    assert "Traceback" not in r.stderr and "report it" not in r.stderr  # not an unexpected error
    assert r.stderr.count("the engine is not installed") == 2 and "manage install" in r.stderr


def test_split_format():
    assert generation.split_format(None, None, False) == (None, "text")
    assert generation.split_format("FLAC", None, False) == ("flac", "text")
    assert generation.split_format("json", None, False) == (None, "json")
    assert generation.split_format(None, Path("x.mp3"), True) == ("mp3", "json")
    assert generation.split_format("wav", Path("x.mp3"), False) == ("wav", "text")
    with pytest.raises(CliError):
        generation.split_format("aiff", None, False)


def test_build_request_leaves_defaults_to_the_service():
    assert generation.build_request("calm piano") == {"prompt": "calm piano"}
    body = generation.build_request("x", 5, "musicgen-small", 3, fmt="wav", sample_rate="native", bit_depth=24)
    assert body == {"prompt": "x", "duration": 5, "model": "musicgen-small", "seed": 3, "format": "wav",
                    "sample_rate": "native", "bit_depth": 24}  # fmt: skip
    assert generation.build_request("x", sample_rate="22050")["sample_rate"] == 22050
    # --stems / --no-stems: sent only when given (unset: the service decides, by whether htdemucs is there).
    assert generation.build_request("x", melody_stems=False)["melody_stems"] is False
    assert "melody_stems" not in generation.build_request("x")
    for kwargs in ({"duration": 0}, {"seed": -1}, {"fmt": "aiff"}, {"sample_rate": "fast"}, {"bit_depth": 12},
                   {"normalize": "loud"}):  # fmt: skip
        with pytest.raises(CliError):
            generation.build_request("x", **kwargs)
    with pytest.raises(CliError):
        generation.build_request("   ")


def test_parse_since():
    now = datetime(2025, 1, 31, 12, 0, 0)
    assert logtools.parse_since("90", now) == datetime(2025, 1, 31, 11, 58, 30)
    assert logtools.parse_since("10m", now) == datetime(2025, 1, 31, 11, 50)
    assert logtools.parse_since("2h", now) == datetime(2025, 1, 31, 10, 0)
    assert logtools.parse_since("1d", now) == datetime(2025, 1, 30, 12, 0)
    assert logtools.parse_since("2025-01-01T08:30", now) == datetime(2025, 1, 1, 8, 30)
    with pytest.raises(CliError):
        logtools.parse_since("last tuesday", now)


def test_filter_since_keeps_unstamped_lines_with_their_stamp():
    lines = [
        "2025-01-01 10:00:00 INFO: a",
        "Traceback of a",
        "2025-01-01 11:00:00 INFO: b",
        "  b continued",
    ]
    assert logtools.filter_since(lines, datetime(2025, 1, 1, 10, 30)) == lines[2:]
    assert logtools.filter_since(lines, datetime(2025, 1, 1, 9, 0)) == lines


def test_read_lines_tail(tmp_path):
    f = tmp_path / "log"
    f.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert logtools.read_lines(f, 3) == ["line 99997", "line 99998", "line 99999"]
    assert logtools.read_lines(f, 0) == []
    assert len(logtools.read_lines(f, None)) == 100_000


def test_settings_env_round_trips(tmp_path):
    s = load_settings(port=9999, data_dir=tmp_path, models_dir=tmp_path / "m", device="cpu")
    env = settings_env(s)
    assert env["AUDIOCRAFT_PORT"] == "9999"
    assert env["AUDIOCRAFT_MODELS_DIR"] == str(tmp_path / "m")
    assert "AUDIOCRAFT_API_KEY" not in env  # None is not exported
    from lib.settings import Settings

    again = Settings(**{k.removeprefix("AUDIOCRAFT_").lower(): v for k, v in env.items()})
    assert again.port == 9999 and again.device == "cpu" and again.data_dir == tmp_path


def test_runtime_names(monkeypatch):
    import cli.runtime.docker as docker_rt

    monkeypatch.setattr(docker_rt, "docker_available", lambda timeout=2.0: False)
    assert resolve_runtime_name("auto") == "native"
    monkeypatch.setattr(docker_rt, "docker_available", lambda timeout=2.0: True)
    assert resolve_runtime_name("auto") == "docker"
    assert resolve_runtime_name("NATIVE") == "native"
    assert resolve_runtime_name("docker") == "docker"
    with pytest.raises(CliError):
        resolve_runtime_name("podman")


def test_api_error_reads_the_envelope():
    req = httpx.Request("POST", "http://x/api/generate/music")
    resp = httpx.Response(
        422,
        json={"error": {"code": "invalid_field", "message": "duration: too long", "field": "duration", "hint": "h"}},
        request=req,
    )
    e = api_error(resp)
    assert (e.status, e.error_code, e.message, e.hint) == (422, "invalid_field", "duration: too long", "h")
    plain = api_error(httpx.Response(404, text="Not Found", request=req))
    assert plain.error_code == "not_found" and "404" in plain.message
    busy = api_error(httpx.Response(429, headers={"Retry-After": "3"}, json={}, request=req))
    assert "3 s" in (busy.hint or "")


def test_normalize_server():
    assert normalize_server("localhost:7862/") == "http://localhost:7862"
    assert normalize_server("https://a.b") == "https://a.b"
    with pytest.raises(CliError):
        normalize_server("ftp://x")
