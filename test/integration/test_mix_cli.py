"""`resource-audiocraft mix` and `content generate --type mix` as a user runs them, against the real
server process. The CLI has a data dir of its own (its content store), so every file and content item
reaches the server as an upload."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import soundfile as sf
from server_process import ServerProcess
from test_cli_support import Cli
from waiting import HANG_GUARD_S

pytestmark = pytest.mark.e2e

RATE = 16000
EXACT = ("--sample-rate", "native", "--normalize", "none", "--bit-depth", "32")


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("mix-cli-server")).start()
    yield proc
    proc.kill()


@pytest.fixture
def cli(server, tmp_path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "cli-data", server.port, cwd=work)


def tone(path, freq: float, seconds: float, amplitude: float):
    t = np.arange(round(seconds * RATE)) / RATE
    sf.write(path, (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, subtype="FLOAT")
    return sf.read(path, dtype="float32")[0]


def test_mix_two_files_with_offsets_and_gains(cli, tmp_path):
    music = tone(tmp_path / "music.wav", 440, 1.0, 0.4)
    thunder = tone(tmp_path / "thunder.wav", 1000, 0.5, 0.3)
    out = tmp_path / "scene.wav"
    r = cli(
        "mix", "--track", f"{tmp_path / 'music.wav'}@0:-3dB", "--track", f"{tmp_path / 'thunder.wav'}@0.75",
        "-o", str(out), *EXACT, "--json", timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.text
    result = json.loads(r.out)
    assert result["output"] == str(out) and result["duration_s"] == pytest.approx(1.25) and result["model"] == "mix"
    audio, rate = sf.read(out, dtype="float32")
    expected = np.zeros(20000)
    expected[:16000] += music * 10 ** (-3 / 20)
    expected[12000:] += thunder
    assert rate == RATE
    np.testing.assert_allclose(audio, expected, atol=1e-6)


def test_mix_an_earlier_job_with_options_and_the_default_name(cli, server, tmp_path):
    r = httpx.post(f"{server.base}/api/generate/music", json={"prompt": "drums", "duration": 0.5}, timeout=HANG_GUARD_S)
    assert r.status_code == 200, r.text
    job_id = r.headers["x-job-id"]
    r = cli("mix", "-t", f"job:{job_id}@0.25,fade_in=0.1,pan=-0.5", "-f", "flac", "--no-progress", timeout=HANG_GUARD_S)
    assert r.code == 0, r.text
    written = list(cli.cwd.glob("mix-*.flac"))
    assert len(written) == 1 and str(written[0].name) in r.out
    info = sf.info(written[0])
    assert (info.samplerate, info.channels) == (44100, 2)  # panned: stereo
    assert info.duration == pytest.approx(0.75, abs=0.01)


def test_content_generate_type_mix_and_a_mix_preset(cli, tmp_path):
    tone(tmp_path / "rain.wav", 300, 2.0, 0.2)
    tone(tmp_path / "bolt.wav", 900, 0.4, 0.5)
    r = cli("content", "add", "--file", str(tmp_path / "rain.wav"), "--name", "rain")
    assert r.code == 0, r.text
    r = cli(
        "content", "generate", "--type", "mix", "--track", "content:rain@0,loop,fade_out=0.5",
        "--track", f"{tmp_path / 'bolt.wav'}@1,role=effect", "--duck", "6", "--duration", "3", "--name", "storm",
        "--json", timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert r.code == 0, r.text
    assert json.loads(r.out)["content"] == "storm"
    item = json.loads(cli("content", "get", "--name", "storm", "--format", "json").out)
    assert item["type"] == "audio" and item["duration_s"] == pytest.approx(3.0) and item["metadata"]["kind"] == "mix"

    preset = tmp_path / "storm-preset.json"
    tracks = ["content:storm@0:-6dB", {"file": str(tmp_path / "bolt.wav"), "offset_s": 0.5, "role": "effect"}]
    preset.write_text(json.dumps({"type": "mix", "tracks": tracks, "format": "ogg"}))
    assert cli("content", "add", "--file", str(preset), "--name", "storm-preset").code == 0
    r = cli("content", "execute", "--name", "storm-preset", "--save-as", "storm-2", "--format", "json",
            timeout=HANG_GUARD_S)  # fmt: skip
    assert r.code == 0, r.text
    item = json.loads(cli("content", "get", "--name", "storm-2", "--format", "json").out)
    assert item["format"] == "ogg" and item["metadata"]["preset"] == "storm-preset"


def test_mistakes_are_one_line_and_exit_1(cli, tmp_path):
    tone(tmp_path / "a.wav", 440, 0.5, 0.3)
    a = str(tmp_path / "a.wav")
    for args, says in (
        (("-t", f"{a},colour=blue"), "unknown key"),
        (("-t", f"{a},pan=3"), "outside -1..1"),
        (("-t", str(tmp_path / "missing.wav")), "neither a file nor an audio content item"),
        (("-t", f"{a},trim_start=2"), "trim_start_s"),  # the server's 422, naming the field
        (("-t", "job:0123456789abcdef"), "no job"),
        ((), "--track"),
    ):
        r = cli("mix", *args, timeout=HANG_GUARD_S)
        assert r.code == 1, (args, r.text)
        assert says in r.err and "Traceback" not in r.err, (args, r.err)
