"""A redis-server of the tests' own: Debian's package (installed by test/redis/ensure-redis.sh when
missing), on a free loopback port, in a temporary directory, with AOF and fsync on every write (so a
SIGKILLed server, started again on its directory, has every write it acknowledged)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from server_process import ROOT, free_port
from waiting import STALL_S, file_size, wait_for_progress

ENSURE = ROOT / "test" / "redis" / "ensure-redis.sh"


def ensure_installed() -> str | None:
    """None when redis-server can run here, else why not (the Redis tests skip with it)."""
    if shutil.which("redis-server"):
        return None
    done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True)
    if done.returncode != 0 or not shutil.which("redis-server"):
        return f"redis-server is not installed and {ENSURE.name} could not install it: {done.stderr.strip()[-400:]}"
    return None


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None):
        self.dir = directory
        self.port = port or free_port()
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_progress(self._answers, f"redis-server on port {self.port} to answer PING", poll_s=0.02)
        return self

    def _answers(self) -> tuple[bool, tuple]:
        import redis

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited early:\n{self.log()}")
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=1) as client:
                return bool(client.ping()), ()
        except redis.RedisError:
            return False, (file_size(self.log_path),)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save; what it acknowledged is in its append-only file."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STALL_S)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(STALL_S)
