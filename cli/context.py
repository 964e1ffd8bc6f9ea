"""Per-invocation state: the settings (environment + flag overrides), the runtime, the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.errors import CliError

if TYPE_CHECKING:
    from cli.client import Client
    from cli.runtime.base import Runtime
    from lib.settings import Settings

_ENV_PREFIX = "AUDIOCRAFT_"


@dataclass
class State:
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    _settings: Settings | None = None

    def settings(self, **more: Any) -> Settings:
        """Settings from the environment with the global flags, then `more`, on top."""
        if self._settings is not None and not more:
            return self._settings
        s = build_settings({**self.overrides, **{k: v for k, v in more.items() if v is not None}})
        if not more:
            self._settings = s
        return s

    def runtime(self, venv: Path | None = None) -> Runtime:
        from cli.runtime import get_runtime

        return get_runtime(self.settings(), venv=venv)

    def client(self, server: str | None = None, timeout: float = 30.0) -> Client:
        from cli.client import Client

        s = self.settings()
        return Client(server or s.endpoint, api_key=s.api_key, timeout=timeout)


def build_settings(overrides: dict[str, Any]) -> Settings:
    from pydantic import ValidationError

    from lib.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        source = f"--{name.replace('_', '-')}" if name in overrides else f"{_ENV_PREFIX}{name.upper()}"
        raise CliError(
            f"invalid setting {name}: {first.get('msg', 'invalid value')} (from {source})",
            f"fix {source}; `resource-audiocraft help` lists the defaults",
        ) from None


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
