"""The runtime interface: how the server is installed, started, stopped, observed.

The lifecycle commands (`manage ...`, `status`, `logs`) only talk to this interface. `native` runs a
background process from the project's venv; `docker` runs the server image as a container.
Health checks, exit codes and output stay in the commands, so every runtime behaves the same.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lib.settings import Settings


@dataclass
class RuntimeStatus:
    runtime: str
    running: bool
    endpoint: str
    port: int
    pid: int | None = None
    # True when this runtime started the server (pid file / container it owns).
    managed: bool = False
    started_at: float | None = None
    log_file: Path | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """What runs the server, for messages: `container audiocraft` or `pid 1234`."""
        if self.detail.get("container"):
            return f"container {self.detail['container']}"
        return f"pid {self.pid}" if self.pid else "not started by this CLI"


class Runtime(abc.ABC):
    name: str = "?"

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- install ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def is_installed(self) -> bool:
        """Everything the server needs is in place (venv with the server extra, or the image)."""

    @abc.abstractmethod
    def install(self, force: bool = False, skip_validation: bool = False) -> None:
        """Install; raises Skipped when already installed and not `force`."""

    @abc.abstractmethod
    def uninstall(self, force: bool = False, keep_data: bool = False) -> list[str]:
        """Remove what install put in place (and the data unless `keep_data`); returns what went.

        Raises Skipped when nothing is installed."""

    def health_state(self) -> str | None:
        """The runtime's own view of health (docker: the container's HEALTHCHECK), or None if it has none."""
        return None

    def finish_uninstall(self) -> None:
        """Called after uninstall's report is printed: removals that had to wait (the CLI's own venv)."""
        return None

    # -- process ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> RuntimeStatus:
        """Start the server detached; returns at once (the caller waits for health).

        Raises Skipped when it already runs, CliError when it cannot start."""

    @abc.abstractmethod
    def stop(self, force: bool = False, timeout: float = 30.0) -> bool:
        """Stop it: a graceful signal, then a kill after `timeout` (at once with `force`).

        Returns True when the graceful stop worked. Raises Skipped when it is not running."""

    @abc.abstractmethod
    def status(self) -> RuntimeStatus:
        """Whether the server process runs, where it listens; cheap, no HTTP."""

    # -- logs ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def has_logs(self) -> bool: ...

    @abc.abstractmethod
    def logs(self, tail: int | None, since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """Log lines (without newlines): the last `tail` (None: all) at or after `since`, then new
        ones while `follow`. Raises Skipped when there are none."""
