"""Start and stop the real server process (`python -m server`) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from waiting import HANG_GUARD_S, STALL_S, Stalled, cpu_ticks, file_size, wait_for_progress

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        models_dir: Path,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str | None] | None = None,
        root: Path = ROOT,
        **settings: object,
    ):
        """`settings` become AUDIOCRAFT_* variables; `env` sets other variables (None removes one);
        `root`: the source tree the server runs from (a benchmark may time another one)."""
        self.root = root
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir / "server.log"
        self.env = {
            **os.environ,
            "AUDIOCRAFT_HOST": "127.0.0.1",  # what self.base reaches (a platform default may say 0.0.0.0)
            "AUDIOCRAFT_PORT": str(self.port),
            "AUDIOCRAFT_MODELS_DIR": str(models_dir),
            "AUDIOCRAFT_DATA_DIR": str(data_dir),
            "AUDIOCRAFT_DEVICE": "cpu",
            **{f"AUDIOCRAFT_{k.upper()}": str(v) for k, v in settings.items()},
        }
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.proc: subprocess.Popen | None = None

    def start(self, stall_s: float = STALL_S) -> ServerProcess:
        """Start it and wait for /health, for as long as it gets on (uses CPU, writes its log)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

        def healthy() -> tuple[bool, tuple]:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=stall_s).status_code == 200:
                    return True, ()
            except httpx.HTTPError:
                pass
            return False, self._activity()

        try:
            wait_for_progress(healthy, f"the server on port {self.port} to answer /health", stall_s=stall_s, poll_s=0.2)
        except Stalled as e:
            self.kill()
            raise AssertionError(f"server did not become healthy: {e}\n{self.log()}") from None
        return self

    def _activity(self) -> tuple:
        """What shows the process getting on: its CPU time and its log's size."""
        assert self.proc is not None
        return cpu_ticks(self.proc.pid), file_size(self.log_path)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STALL_S)  # a hang guard: the kernel ends a SIGKILLed process at once

    def terminate(self, stall_s: float = STALL_S) -> int:
        """SIGTERM, then wait for the exit while the server gets on (it may drain running jobs)."""
        assert self.proc is not None
        self.proc.terminate()

        def exited() -> tuple[bool, tuple]:
            return self.proc.poll() is not None, self._activity()

        wait_for_progress(
            exited, f"the server (pid {self.proc.pid}) to exit after SIGTERM", stall_s=stall_s, poll_s=0.1
        )
        return self.proc.returncode

    def client(self, timeout_s: float = HANG_GUARD_S) -> httpx.Client:
        """Its own timeout is a hang guard (a synchronous generation cannot report progress); the
        waits in waiting.py poll with the stall limit."""
        return httpx.Client(base_url=self.base, timeout=timeout_s)
