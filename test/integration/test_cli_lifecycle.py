"""The issue's "done when", through the real CLI and a real server process on tiny models:
manage start --wait → status → content generate → content list → test smoke → manage stop.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from test_cli_support import Cli, assert_clean_error, free_port, server_log, stop_leftover, write_wav
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S

pytestmark = pytest.mark.e2e

# What `manage start --wait` may wait for health: far above a start-up on a loaded machine.
START_WAIT_S = "600"


@pytest.fixture(scope="module")
def live(tiny_hub, tmp_path_factory):
    """A CLI bound to its own data dir and port, with the service started by `manage start --wait`."""
    base = tmp_path_factory.mktemp("cli-live")
    work = base / "work"
    work.mkdir()
    cli = Cli(base / "data", free_port(), cwd=work, AUDIOCRAFT_MODELS_DIR=str(tiny_hub), AUDIOCRAFT_DEVICE="cpu")
    r = cli("manage", "start", "--wait", "--timeout", START_WAIT_S, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text + server_log(cli)
    yield cli
    # Whatever happened in the tests, leave no server behind.
    stop_leftover(cli)


def test_status_json_running_and_healthy(live):
    r = live("status", "--json")
    assert r.code == 0, r.text
    assert r.out.startswith("{")
    data = json.loads(r.out)
    assert data["running"] is True and data["healthy"] is True
    assert data["port"] == live.port
    assert data["endpoint"] == f"http://127.0.0.1:{live.port}"
    assert isinstance(data["pid"], int)
    assert data["version"] and data["device"] == "cpu"
    assert set(data["queue"]) == {"queued", "running", "capacity"}
    assert r.cpu_seconds < 10, r.cpu_seconds
    text = live("status")
    assert text.code == 0 and "healthy" in text.out


def test_start_again_exits_2(live):
    r = live("manage", "start")
    assert r.code == 2, r.text
    assert "already running" in r.err


def test_content_generate_music_writes_a_5s_wav(live, tmp_path):
    out = tmp_path / "x.wav"
    r = live(
        "content", "generate", "--type", "music", "--prompt", "calm piano", "--duration", "5",
        "--output", str(out), "--seed", "7", timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.text + server_log(live)
    with wave.open(str(out)) as w:
        assert abs(w.getnframes() / w.getframerate() - 5.0) < 0.05
    assert "saved as content" in r.out

    listed = live("content", "list", "--format", "json")
    assert listed.code == 0
    items = [i for i in json.loads(listed.out) if i["source"] == "generated"]
    assert len(items) >= 1
    item = next(i for i in items if i["metadata"].get("seed") == 7)
    assert item["type"] == "audio" and item["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert item["metadata"]["prompt"] == "calm piano"
    assert item["metadata"]["model"] == "musicgen-small"
    # The stored copy is the same audio as --output.
    got = tmp_path / "copy.wav"
    assert live("content", "get", "--name", item["name"], "--output", str(got)).code == 0
    assert got.read_bytes() == out.read_bytes()


def test_content_generate_named_json_and_existing_name(live):
    r = live(
        "content", "generate", "--type", "music", "--prompt", "drums", "--duration", "1", "--name", "beat",
        "--json", timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["content"] == "beat" and data["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert Path(data["output"]).is_file()
    again = live("content", "generate", "--type", "music", "--prompt", "drums", "--name", "beat")
    assert again.code == 2


def test_preset_execute(live, tmp_path):
    preset = tmp_path / "short.json"
    preset.write_text(json.dumps({"type": "music", "prompt": "soft pad", "duration": 1, "model": "musicgen-small"}))
    assert live("content", "add", "--file", str(preset)).code == 0
    r = live(
        "content", "execute", "--name", "short", "--options", '{"seed": 11}', "--format", "json", timeout=HANG_GUARD_S
    )
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["seed"] == 11 and data["content"].startswith("short-")


def test_generate_music_client_command(live, tmp_path):
    out = tmp_path / "beat.flac"
    r = live(
        "generate", "music", "--prompt", "lofi", "--duration", "1", "--output", str(out), "--json", timeout=HANG_GUARD_S
    )
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["format"] == "flac" and out.read_bytes()[:4] == b"fLaC"
    # A model error from the service: its message and hint, exit 1.
    bad = live("generate", "music", "--prompt", "x", "--model", "no-such-model")
    assert_clean_error(bad)
    assert "no-such-model" in bad.err


def test_sound_through_both_cli_commands(live, tmp_path):
    out = tmp_path / "rain.wav"
    r = live("generate", "sound", "--prompt", "rain", "--output", str(out), "--json", timeout=HANG_GUARD_S)
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["model"] == "audiogen-medium" and data["duration_s"] == 5.0
    with wave.open(str(out)) as w:
        assert w.getnframes() == 5 * 44100
    r = live(
        "content", "generate", "--type", "sound", "--prompt", "dog barking", "--duration", "2", timeout=HANG_GUARD_S
    )
    assert r.code == 0, r.text + server_log(live)
    assert "saved as content" in r.out


def test_models_and_jobs(live):
    r = live("models", "list", "--format", "json")
    assert r.code == 0, r.text
    models = {m["name"]: m for m in json.loads(r.out)["models"]}
    assert models["musicgen-small"]["installed"] is True
    assert live("models", "list").code == 0

    r = live("jobs", "list", "--format", "json")
    assert r.code == 0
    jobs = json.loads(r.out)["jobs"]
    assert jobs and all(j["state"] == "succeeded" for j in jobs)
    job_id = jobs[0]["id"]
    assert live("jobs", "show", job_id).code == 0
    r = live("jobs", "wait", job_id, "--format", "json")
    assert r.code == 0 and json.loads(r.out)["state"] == "succeeded"
    assert_clean_error(live("jobs", "show", "no-such-job"))


def test_logs_show_the_server(live):
    r = live("logs", "--tail", "20")
    assert r.code == 0
    assert len(r.out.splitlines()) <= 20
    r = live("logs", "--since", "10m", "--tail", "1000")
    assert "starting the server" in r.out


def test_test_smoke_passes_against_the_running_service(live):
    # The phase enforces its budget itself (exit 1 past it); here one far above the quiet 30 s.
    r = live("test", "smoke", timeout=QUICK_HANG_GUARD_S + 60, SMOKE_BUDGET_S=str(int(QUICK_HANG_GUARD_S)))
    assert r.code == 0, r.text


def test_input_audio_from_content_is_resolved(live, tmp_path):
    wav = write_wav(tmp_path / "theme.wav")
    assert live("content", "add", "--file", str(wav), "--name", "theme").code == 0
    out = tmp_path / "more.wav"
    r = live("content", "generate", "--type", "continuation", "--input", "theme", "--prompt", "more", "--duration", "1",
             "--output", str(out), timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text + server_log(live)
    with wave.open(str(out)) as w:  # the 0.5 s prompt (whole 20 ms frames), then 1 s
        assert w.getnframes() / w.getframerate() == pytest.approx(1.5, abs=0.02)


def _mp3(path: Path, seconds: float = 2.0) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(44100 * seconds)) / 44100
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 44100, format="MP3")
    return path


def test_generate_melody_and_continue_with_an_mp3(live, tmp_path):
    mp3 = _mp3(tmp_path / "theme.mp3")
    out = tmp_path / "melody.flac"
    r = live("generate", "melody", "--melody", str(mp3), "--prompt", "strings", "--duration", "2",
             "--melody-start", "0.5", "--output", str(out), "--json", timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text + server_log(live)
    assert json.loads(r.out)["duration_s"] == 2.0
    assert out.read_bytes()[:4] == b"fLaC"
    out = tmp_path / "cont.wav"
    r = live("generate", "continue", "--audio", str(mp3), "--duration", "1", "--no-include-prompt",
             "--output", str(out), timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text + server_log(live)
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(1.0, abs=1e-3)


def test_generate_style_with_an_mp3(live, tmp_path):
    mp3 = _mp3(tmp_path / "style.mp3")
    out = tmp_path / "style.wav"
    r = live("generate", "style", "--style", str(mp3), "--prompt", "lofi", "--duration", "1",
             "--excerpt-length", "1.5", "--eval-q", "2", "--cfg-coef-beta", "5", "--output", str(out), "--json",
             timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text + server_log(live)
    assert json.loads(r.out)["model"] == "musicgen-style"
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(1.0, abs=1e-3)
    r = live("generate", "style", "--style", str(mp3), "--excerpt-length", "6")
    assert r.code != 0 and "--excerpt-length" in r.text


def test_z_stop_then_stop_again(live):
    """Named to run last in the module: stop (0), stop again (2), status not running (2)."""
    # stop honours its own bound: --timeout to drain, then SIGKILL and 10 s; the rest is start-up margin.
    r = live("manage", "stop", "--timeout", "120", timeout=120 + 10 + QUICK_HANG_GUARD_S)
    assert r.code == 0, r.text
    assert "stopped" in r.err and "killed" not in r.err, r.err  # the idle server exited on SIGTERM
    assert not (live.data_dir / "server.pid").exists()
    assert live("manage", "stop").code == 2
    assert live("status", "--json").code == 2
    # restart from stopped brings it back; then leave it stopped.
    r = live("manage", "restart", "--wait", "--timeout", START_WAIT_S, timeout=HANG_GUARD_S)
    assert r.code == 0, r.text + server_log(live)
    assert live("status").code == 0
    assert live("manage", "stop", "--force").code == 0
    assert live("manage", "stop").code == 2
