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
    # Set by `help`, `info`, `status` and `stop`: a bad setting is a warning there (the default is
    # used instead), so the service can still be inspected and stopped. Elsewhere it is an error.
    lenient: bool = False
    _settings: Settings | None = None

    def settings(self, **more: Any) -> Settings:
        """Settings from the environment with the global flags, then `more`, on top."""
        if self._settings is not None and not more:
            return self._settings
        s = build_settings({**self.overrides, **{k: v for k, v in more.items() if v is not None}}, self.lenient)
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


def _source(name: str, overrides: dict[str, Any]) -> str:
    return f"--{name.replace('_', '-')}" if name in overrides else f"{_ENV_PREFIX}{name.upper()}"


def _invalid(err: dict[str, Any], given: dict[str, Any]) -> CliError:
    name = ".".join(str(p) for p in err.get("loc", ())) or "settings"
    source = _source(name, given)
    return CliError(
        f"invalid setting {name}: {err.get('msg', 'invalid value')} (from {source})",
        f"fix {source}; `resource-audiocraft help` lists the defaults",
    )


def build_settings(overrides: dict[str, Any], lenient: bool = False) -> Settings:
    """The settings; a bad value is an error, or with `lenient` a warning and the default instead."""
    from pydantic import ValidationError

    from lib.settings import Settings, load_settings

    given = {k: v for k, v in overrides.items() if v is not None}
    defaults: dict[str, Any] = {}  # bad settings replaced by their defaults (given over the environment)
    while True:
        try:
            return Settings(**given, **defaults) if defaults else load_settings(**given)
        except ValidationError as e:
            errors = e.errors()
            replaced = False
            for err in errors if lenient else ():
                name = str((err.get("loc") or ("",))[0])
                info = Settings.model_fields.get(name)
                if info is None or name in defaults:
                    continue
                default = info.get_default(call_default_factory=True)
                from cli import ui

                ui.warn(
                    f"ignoring the invalid setting {_source(name, given)}={err.get('input')!s}: "
                    f"{err.get('msg', 'invalid value')}; using the default, {default}"
                )
                given.pop(name, None)
                defaults[name] = default
                replaced = True
            if not replaced:
                raise _invalid(errors[0], given) from None


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
