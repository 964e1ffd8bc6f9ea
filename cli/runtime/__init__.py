"""Runtimes: where the server runs. Pick one with --runtime docker|native|auto (AUDIOCRAFT_RUNTIME).

`auto` is docker when a Docker engine answers, native otherwise; a native server this CLI started and
that still runs keeps `auto` on native, so status, logs and stop find it.
"""

from __future__ import annotations

from pathlib import Path

from cli.errors import CliError
from cli.runtime.base import Runtime, RuntimeStatus
from lib.settings import Settings

RUNTIMES = ("auto", "docker", "native")

__all__ = ["RUNTIMES", "Runtime", "RuntimeStatus", "check_runtime_name", "get_runtime", "resolve_runtime_name"]


def check_runtime_name(name: str) -> str:
    """The name, lower-cased, or one clear error (no engine is contacted)."""
    name = name.lower()
    if name not in RUNTIMES:
        raise CliError(f"invalid runtime {name!r}", f"use one of: {', '.join(RUNTIMES)}")
    return name


def resolve_runtime_name(name: str, settings: Settings | None = None) -> str:
    """docker or native. `auto`: native while a native server started by this CLI runs (with
    `settings`), else docker when a Docker engine answers, else native."""
    name = check_runtime_name(name)
    if name != "auto":
        return name
    if settings is not None:
        from cli.runtime.native import NativeRuntime

        if NativeRuntime(settings).status().running:
            return "native"
    from cli.runtime.docker import docker_available

    return "docker" if docker_available() else "native"


def get_runtime(settings: Settings, venv: Path | None = None) -> Runtime:
    name = resolve_runtime_name(settings.runtime, settings)
    if name == "docker":
        from cli.runtime.docker import make_runtime

        return make_runtime(settings)
    from cli.runtime.native import NativeRuntime

    return NativeRuntime(settings, venv=venv)
