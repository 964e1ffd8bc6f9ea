"""Helpers for the CLI tests (no tests here): drive the real CLI as a subprocess, isolated — its own
data dir, a free port, no inherited AUDIOCRAFT_* settings. Named test_cli_* to live beside them."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from waiting import QUICK_HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_command() -> list[str]:
    """The console script next to this interpreter (the venv's), else `python -m cli.main`."""
    script = Path(sys.executable).with_name("resource-audiocraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float  # wall clock: it grows with the machine's load
    cpu_seconds: float | None = None  # user + system CPU of the command and what it ran: its own cost

    @property
    def text(self) -> str:
        return self.out + self.err


class Cli:
    def __init__(self, data_dir: Path, port: int, cwd: Path, **env: str):
        self.data_dir = data_dir
        self.port = port
        self.cwd = cwd
        base = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOCRAFT_")}
        base.update(
            {
                "AUDIOCRAFT_DATA_DIR": str(data_dir),
                "AUDIOCRAFT_PORT": str(port),
                "AUDIOCRAFT_HOST": "127.0.0.1",
                # These tests drive the native runtime; with a Docker engine up, `auto` would pick docker.
                "AUDIOCRAFT_RUNTIME": "native",
                "NO_COLOR": "1",
                "COLUMNS": "200",
            }
        )
        base.update(env)
        self.env = base

    def __call__(self, *args: str, timeout: float = QUICK_HANG_GUARD_S, input: str | None = None, **env: str) -> Result:
        """Run the CLI to completion. `timeout` is a hang guard (it cannot report progress): pass
        waiting.HANG_GUARD_S for a command that generates."""
        t0, cpu0 = time.monotonic(), children_cpu_seconds()
        p = subprocess.run(
            [*cli_command(), *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=self.cwd,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0, children_cpu_seconds() - cpu0)


def children_cpu_seconds() -> float:
    """CPU used so far by this process's finished children and what they waited for (getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    import math
    import struct
    import wave

    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames))
        )
    return path


def assert_clean_error(r: Result, code: int = 1) -> None:
    """A failure is one or two lines on stderr, no traceback, the contract's exit code."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.text, r.text
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 2, r.err


def server_log(cli: Cli) -> str:
    """The tail of the service's log, for a failure message."""
    log = cli.data_dir / "logs" / "server.log"
    return "\n--- server.log ---\n" + (log.read_text()[-4000:] if log.exists() else "(none)")


def stop_leftover(cli: Cli) -> None:
    """Whatever a test did, leave no server behind: stop it, then kill its process group."""
    pid_file = cli.data_dir / "server.pid"
    if pid_file.exists():
        cli("manage", "stop", "--timeout", "20", timeout=QUICK_HANG_GUARD_S)
    if pid_file.exists():
        try:
            os.killpg(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
