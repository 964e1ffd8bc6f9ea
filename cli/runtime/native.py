"""The native runtime: `resource-audiocraft serve` as a detached process from the project's venv.

State lives under settings.data_dir:
    server.pid         JSON: pid, host, port, endpoint, started_at, cmd (plain integers are accepted too)
    logs/server.log    the server's stdout and stderr, appended; start/stop markers with timestamps
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from cli import logtools, paths
from cli.errors import CliError, Skipped
from cli.runtime.base import Runtime, RuntimeStatus
from lib.files import private_dir
from lib.settings import UNSAFE_BIND_HINT, Settings

# What must import in the venv for the server to run.
SERVER_MODULES = ("torch", "transformers", "starlette", "uvicorn", "soundfile", "server.main", "cli.main")
DATA_MARKER = ".resource-audiocraft"
# Entries of the data dir this project owns (removed by uninstall when the dir is not clearly ours).
OWN_DATA_ENTRIES = (
    "content",
    "logs",
    "server.pid",
    "artifacts",
    "jobs.sqlite3",
    "jobs.sqlite3-wal",
    "jobs.sqlite3-shm",
)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as AUDIOCRAFT_* variables, so the child process sees the same (flag-overridden) values."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        env[f"AUDIOCRAFT_{name.upper()}"] = str(value)
    return env


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped: PID 1 in a container may never reap) is not alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def port_in_use(host: str, port: int) -> bool:
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        with socket.create_connection((probe, port), timeout=0.5):
            return True
    except OSError:
        return False


class NativeRuntime(Runtime):
    name = "native"

    def __init__(self, settings: Settings, venv: Path | None = None):
        super().__init__(settings)
        self.root = paths.project_root()
        self.venv = Path(venv) if venv else paths.venv_dir(self.root)
        self.data_dir = Path(settings.data_dir)
        self.pid_file = self.data_dir / "server.pid"
        self.log_file = self.data_dir / "logs" / "server.log"

    # -- install ---------------------------------------------------------------------------------

    @property
    def python(self) -> Path:
        return paths.venv_python(self.venv)

    def _check_modules(self, python: Path, timeout: float = 60.0) -> list[str]:
        """The server modules `python` cannot find (an empty list means installed)."""
        code = (
            "import importlib.util as u, sys\n"
            "missing = []\n"
            f"for m in {SERVER_MODULES!r}:\n"
            "    try:\n"
            "        ok = u.find_spec(m) is not None\n"
            "    except Exception:\n"
            "        ok = False\n"
            "    if not ok: missing.append(m)\n"
            "print(' '.join(missing))\n"
        )
        try:
            res = subprocess.run(
                [str(python), "-c", code], capture_output=True, text=True, timeout=timeout, cwd=self.root
            )
        except (OSError, subprocess.TimeoutExpired):
            return list(SERVER_MODULES)
        if res.returncode != 0:
            return list(SERVER_MODULES)
        return res.stdout.split()

    def is_installed(self) -> bool:
        return self.python.exists() and not self._check_modules(self.python)

    def install(self, force: bool = False, skip_validation: bool = False) -> None:
        if not force and self.is_installed():
            raise Skipped(f"already installed (venv {self.venv})", "use --force to reinstall")
        stamp = self.venv / ".installed"
        if force:
            with contextlib.suppress(FileNotFoundError):
                stamp.unlink()
        make = shutil.which("make")
        default_venv = self.venv == paths.venv_dir(self.root)
        if make and (self.root / "Makefile").is_file():
            cmd = [make, "-C", str(self.root), "install"]
            if not default_venv:
                cmd.append(f"VENV={self.venv}")
            self._run_step(cmd, "make install")
        else:
            if not self.python.exists():
                self._run_step([sys.executable, "-m", "venv", str(self.venv)], "creating the venv")
            pip = [str(self.python), "-m", "pip", "install", "-q"]
            self._run_step([*pip, "--upgrade", "pip"], "upgrading pip")
            self._run_step([*pip, "-e", f"{self.root}[server]"], "installing the server extra")
        if not skip_validation:
            missing = self._check_modules(self.python)
            if missing:
                raise CliError(
                    f"install finished but the venv lacks: {', '.join(missing)}",
                    f"run `make -C {self.root} install` and read its output",
                )
            res = subprocess.run(
                [
                    str(self.python),
                    "-c",
                    "import torch, transformers, starlette, uvicorn; import server.main",
                ],
                capture_output=True,
                text=True,
                cwd=self.root,
            )
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["unknown error"])[-1]
                raise CliError(f"the installed server does not import: {last}", "reinstall with --force")

    def _run_step(self, cmd: list[str], what: str) -> None:
        try:
            # stdout to stderr: the CLI's stdout stays for results.
            res = subprocess.run(cmd, cwd=self.root, stdout=sys.stderr, stderr=sys.stderr)
        except OSError as e:
            raise CliError(f"{what} failed: {e}") from None
        if res.returncode != 0:
            raise CliError(
                f"{what} failed (exit {res.returncode})", "read the output above; fix it and rerun"
            )

    def uninstall(self, force: bool = False, keep_data: bool = False) -> list[str]:
        has_data = self._has_data() and not keep_data
        if not self.venv.exists() and not has_data:
            raise Skipped(f"not installed (no venv at {self.venv})")
        removed: list[str] = []
        if self.status().running:
            self.stop(force=force, timeout=10.0 if force else 30.0)
            removed.append("the running server")
        if has_data:
            removed.extend(self._remove_data())
        if self.venv.exists():
            if self._runs_this_cli():
                # This very process runs from it: removing it now would break the imports still to
                # come (rich loads parts lazily). finish_uninstall() removes it as the last act.
                self.pending_removal = self.venv
            else:
                shutil.rmtree(self.venv, ignore_errors=True)
            removed.append(f"venv {self.venv}")
        return removed

    def _runs_this_cli(self) -> bool:
        try:
            return Path(sys.prefix).resolve() == self.venv.resolve()
        except OSError:
            return False

    def finish_uninstall(self) -> None:
        """Remove a venv this CLI runs from, then end the process at once (nothing left to import)."""
        target = getattr(self, "pending_removal", None)
        if target is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        shutil.rmtree(target, ignore_errors=True)
        os._exit(0)

    def _has_data(self) -> bool:
        d = self.data_dir
        return (d / DATA_MARKER).exists() or any((d / entry).exists() for entry in OWN_DATA_ENTRIES)

    def _remove_data(self) -> list[str]:
        d = self.data_dir
        if (d / DATA_MARKER).exists() or "audiocraft" in d.name:
            shutil.rmtree(d, ignore_errors=True)
            return [f"data {d}"]
        removed = []
        for entry in OWN_DATA_ENTRIES:
            p = d / entry
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
            else:
                continue
            removed.append(f"data {p}")
        with contextlib.suppress(OSError):
            d.rmdir()  # only when nothing else is left in it
        return removed

    # -- process ---------------------------------------------------------------------------------

    def _read_pid_file(self) -> dict | None:
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, int):
            data = {"pid": data}
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        return data

    def _is_our_server(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        argv = _cmdline(pid)
        if argv is None:  # no /proc: trust the pid file
            return True
        return "serve" in argv

    def status(self) -> RuntimeStatus:
        data = self._read_pid_file()
        if data and self._is_our_server(data["pid"]):
            port = int(data.get("port") or self.settings.port)
            return RuntimeStatus(
                runtime=self.name,
                running=True,
                endpoint=str(data.get("endpoint") or self.settings.endpoint),
                port=port,
                pid=data["pid"],
                managed=True,
                started_at=data.get("started_at"),
                log_file=self.log_file,
                detail={"pid_file": str(self.pid_file), "cmd": data.get("cmd")},
            )
        return RuntimeStatus(
            runtime=self.name,
            running=False,
            endpoint=self.settings.endpoint,
            port=self.settings.port,
            log_file=self.log_file if self.log_file.exists() else None,
            detail={"pid_file": str(self.pid_file), "stale_pid_file": data is not None},
        )

    def _server_command(self) -> list[str]:
        script = self.venv / "bin" / "resource-audiocraft"
        if script.exists():
            return [str(script), "serve"]
        if self.python.exists():
            return [str(self.python), "-m", "cli.main", "serve"]
        raise CliError(
            f"not installed: no venv at {self.venv}", "run `resource-audiocraft manage install` first"
        )

    def start(self) -> RuntimeStatus:
        current = self.status()
        if current.running:
            raise Skipped(f"already running (pid {current.pid}) at {current.endpoint}")
        self._clear_stale_pid()
        s = self.settings
        problem = s.unsafe_bind()
        if problem is not None:  # the server would refuse too: say so before anything starts
            raise CliError(problem, UNSAFE_BIND_HINT)
        if port_in_use(s.host, s.port):
            raise CliError(
                f"port {s.port} is already in use by another program ({s.endpoint})",
                "stop it, or start this service on another port with --port",
            )
        cmd = self._server_command()
        missing = self._check_modules(Path(cmd[0]).with_name("python"))
        if missing:
            raise CliError(
                f"not installed: the venv {self.venv} lacks {', '.join(missing)}",
                "run `resource-audiocraft manage install`",
            )
        private_dir(self.data_dir)  # 0700: the job store and content are the user's
        (self.data_dir / DATA_MARKER).touch()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"}
        with open(self.log_file, "ab") as log:
            log.write(
                f"{_stamp()} === resource-audiocraft: starting the server on {s.endpoint} ===\n".encode()
            )
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as e:
                raise CliError(
                    f"cannot start the server: {e}", "reinstall with `manage install --force`"
                ) from None
        started = time.time()
        record = {
            "pid": proc.pid,
            "host": s.host,
            "port": s.port,
            "endpoint": s.endpoint,
            "started_at": started,
            "cmd": cmd,
            "runtime": self.name,
        }
        tmp = self.pid_file.with_name(f".{self.pid_file.name}.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.pid_file)
        # A server that cannot start at all (bad flag, import error) dies at once: say so now.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                self._clear_stale_pid(force=True)
                last = [ln for ln in logtools.read_lines(self.log_file, 5) if ln.strip()]
                raise CliError(
                    f"the server exited at once (code {code})" + (f": {last[-1].strip()}" if last else ""),
                    "see `resource-audiocraft logs`",
                )
            time.sleep(0.05)
        return RuntimeStatus(
            runtime=self.name,
            running=True,
            endpoint=s.endpoint,
            port=s.port,
            pid=proc.pid,
            managed=True,
            started_at=started,
            log_file=self.log_file,
        )

    def _clear_stale_pid(self, force: bool = False) -> None:
        data = self._read_pid_file()
        if force or data is None or not self._is_our_server(data["pid"]):
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    def stop(self, force: bool = False, timeout: float = 30.0) -> bool:
        current = self.status()
        if not current.running or current.pid is None:
            self._clear_stale_pid()
            raise Skipped("not running")
        pid = current.pid
        graceful = not force
        self._signal(pid, signal.SIGKILL if force else signal.SIGTERM)
        if not self._wait_gone(pid, 10.0 if force else timeout):
            if graceful:
                self._signal(pid, signal.SIGKILL)
                graceful = False
            if not self._wait_gone(pid, 10.0):
                raise CliError(f"the server (pid {pid}) did not stop, even after SIGKILL")
        self._clear_stale_pid(force=True)
        with contextlib.suppress(OSError), open(self.log_file, "a") as log:
            how = "stopped" if graceful else "killed"
            log.write(f"{_stamp()} === resource-audiocraft: server {how} (pid {pid}) ===\n")
        return graceful

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        # The server leads its own session (start_new_session): signal the group, so workers go too.
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid)

    # -- logs ------------------------------------------------------------------------------------

    def has_logs(self) -> bool:
        try:
            return self.log_file.stat().st_size > 0
        except OSError:
            return False

    def logs(self, tail: int | None, since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        if not self.has_logs():
            raise Skipped(f"no logs yet ({self.log_file} is missing or empty)", "start the service first")
        lines = logtools.read_lines(self.log_file, None if since is not None else tail)
        if since is not None:
            lines = logtools.filter_since(lines, since)
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
        yield from lines
        if follow:
            yield from logtools.follow(self.log_file)
