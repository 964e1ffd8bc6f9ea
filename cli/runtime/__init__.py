"""Runtimes: where the server runs. Pick one with --runtime docker|native|auto (AUDIOCRAFT_RUNTIME)."""

from __future__ import annotations

from pathlib import Path

from cli.errors import CliError
from cli.runtime.base import Runtime, RuntimeStatus
from lib.settings import Settings

RUNTIMES = ("auto", "docker", "native")

__all__ = ["RUNTIMES", "Runtime", "RuntimeStatus", "get_runtime", "resolve_runtime_name"]


def resolve_runtime_name(name: str) -> str:
    """`auto` picks docker when an engine answers and native otherwise; until the docker runtime
    lands, auto is native."""
    name = name.lower()
    if name not in RUNTIMES:
        raise CliError(f"invalid runtime {name!r}", f"use one of: {', '.join(RUNTIMES)}")
    if name == "auto":
        return "native"
    return name


def get_runtime(settings: Settings, venv: Path | None = None) -> Runtime:
    name = resolve_runtime_name(settings.runtime)
    if name == "docker":
        from cli.runtime.docker import make_runtime

        return make_runtime(settings)
    from cli.runtime.native import NativeRuntime

    return NativeRuntime(settings, venv=venv)
