"""`resource-audiocraft encode` / `decode` as a user runs them, against the real server process."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from server_process import ROOT, ServerProcess
from waiting import HANG_GUARD_S

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    proc = ServerProcess(tiny_hub, tmp_path_factory.mktemp("codec-cli"), max_upload_mb=20).start()
    yield proc
    proc.kill()


def cli(server, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from cli.main import main_entry; main_entry()", "--port", str(server.port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD_S)


def wav(path, seconds=3.0, rate=44100, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t)
    sf.write(path, np.stack([x] * channels, axis=1).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_encode_then_decode(server, tmp_path):
    src = wav(tmp_path / "song.wav", seconds=3.0)
    r = cli(server, "encode", str(src), "-o", str(tmp_path / "song.ecdc"), "-b", "12", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "encodec-24khz" and out["bandwidth_kbps"] == 12
    assert out["compression_ratio"] > 10
    data = (tmp_path / "song.ecdc").read_bytes()
    assert data[:4] == b"ECDC" and out["output_bytes"] == len(data)

    r = cli(server, "decode", str(tmp_path / "song.ecdc"), "-o", str(tmp_path / "back.flac"), "--json")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(tmp_path / "back.flac"))
    assert (info.format, info.samplerate, info.frames) == ("FLAC", 24000, 72000)

    # Text output, default output names, 48 kHz model.
    (tmp_path / "song.ecdc").unlink()
    r = cli(server, "encode", str(src), "--model", "encodec-48khz", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "song.ecdc").exists() and "encodec-48khz" in r.stdout
    r = cli(server, "encode", str(src), "--model", "encodec-48khz", "--no-progress")
    assert r.returncode == 1 and "--force" in r.stderr  # the output exists
    r = cli(server, "decode", str(tmp_path / "song.ecdc"), "--sample-rate", "44100", "--no-progress", "--force")
    assert r.returncode == 0, r.stderr
    audio, rate = sf.read(str(tmp_path / "song.wav"), always_2d=True)
    assert (rate, audio.shape) == (44100, (132300, 2))


def test_errors_are_one_line_and_exit_1(server, tmp_path):
    src = wav(tmp_path / "a.wav", seconds=0.5)
    r = cli(server, "encode", str(src), "-b", "5")
    assert r.returncode == 1
    assert "1.5, 3, 6, 12, 24" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(b"ECDC\x00\x00\x00\x00\x02{}")
    r = cli(server, "decode", str(bad))
    assert r.returncode == 1 and "header" in r.stderr
    r = cli(server, "decode", str(tmp_path / "missing.ecdc"))
    assert r.returncode == 1 and "not a file" in r.stderr


def test_the_cli_module_does_not_import_torch():
    code = "import sys, cli.main, cli.commands.codec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_decoded_audio_matches_the_api(server, tmp_path):
    """The CLI writes exactly what the API answers."""
    src = wav(tmp_path / "x.wav", seconds=1.0, rate=24000, channels=1)
    assert cli(server, "encode", str(src), "-o", str(tmp_path / "x.ecdc")).returncode == 0
    with server.client() as c:
        direct = c.post("/api/encode", files={"file": ("x.wav", src.read_bytes())}).content
    assert direct == (tmp_path / "x.ecdc").read_bytes()
    assert cli(server, "decode", str(tmp_path / "x.ecdc"), "-o", str(tmp_path / "y.wav")).returncode == 0
    with server.client() as c:
        api = c.post("/api/decode", files={"file": ("x.ecdc", direct)}).content
    a, _ = sf.read(io.BytesIO(api))
    b, _ = sf.read(str(tmp_path / "y.wav"))
    assert np.array_equal(a, b)
