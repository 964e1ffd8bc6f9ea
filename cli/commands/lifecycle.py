"""The lifecycle contract's top-level commands: help, info, status, logs, credentials, test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import typer
from rich.markup import escape

from cli import paths, ui
from cli.context import state
from cli.errors import FAILURE, OK, SKIPPED, CliError, Skipped
from cli.runtime.base import RuntimeStatus

RUNTIME_FIELDS = (
    "startup_order",
    "dependencies",
    "startup_time_estimate",
    "startup_timeout",
    "recovery_attempts",
    "priority",
)

USAGE_EXAMPLES = """\
  resource-audiocraft manage install                 # the venv with the server (2 if already there)
  resource-audiocraft manage start --wait            # start the service and wait until healthy
  resource-audiocraft status --json                  # {"running": true, "healthy": true, ...}
  resource-audiocraft status --format json --fast    # pid/container state and one quick /health (< 1 s)
  resource-audiocraft manage start --force           # start, or restart when it runs (exit 0); also: start
  resource-audiocraft content generate --type music --prompt "calm piano" --duration 5 --output calm.wav
  resource-audiocraft content list --format json
  resource-audiocraft generate music --prompt "lofi beat" --duration 8 --output beat.wav
  resource-audiocraft mix --track beat.wav@0:-3dB --track thunder.wav@2.5,role=effect --duck 6 -o scene.wav
  resource-audiocraft models list
  resource-audiocraft jobs list
  resource-audiocraft logs --tail 100 --follow
  resource-audiocraft test smoke                     # checks the running service (< 30 s)
  resource-audiocraft manage stop
  resource-audiocraft models make-tiny --dir /tmp/tiny && \\
    AUDIOCRAFT_MODELS_DIR=/tmp/tiny resource-audiocraft manage start --wait   # offline, tiny models"""


# --------------------------------------------------------------------------------------------------
# help / info


def help_command(ctx: typer.Context) -> None:
    """Usage examples, available commands and the default configuration."""
    st = state(ctx)
    st.lenient = True  # a bad setting is a warning here, never a failure
    s = st.settings()
    root = ctx.find_root().command
    out = ui.out
    out.print(
        "[bold]resource-audiocraft[/bold] — a self-hosted AudioCraft service (MusicGen, AudioGen, EnCodec)"
    )
    out.print()
    out.print("[bold]Usage examples[/bold]")
    out.print(escape(USAGE_EXAMPLES))
    out.print()
    out.print("[bold]Available commands[/bold]")
    for line in _command_lines(root, ctx):
        out.print(line)
    out.print()
    out.print("[bold]Default configuration[/bold]  (environment AUDIOCRAFT_*, overridden by flags)")
    for key, value in _config_rows(s):
        out.print(f"  {key:<22} {escape(str(value))}")
    out.print()
    out.print(
        "Exit codes: 0 success, 1 failure, 2 skipped (already installed or running, not running, not found)."
    )
    out.print("Every command takes --help.")


def _command_lines(group: Any, ctx: typer.Context, prefix: str = "") -> list[str]:
    lines = []
    commands = getattr(group, "commands", {})
    for name in commands:
        cmd = commands[name]
        if getattr(cmd, "hidden", False):
            continue
        full = f"{prefix}{name}"
        sub = getattr(cmd, "commands", None)
        if sub:
            lines.extend(_command_lines(cmd, ctx, prefix=f"{full} "))
        else:
            short = cmd.get_short_help_str(limit=80) if hasattr(cmd, "get_short_help_str") else ""
            lines.append(f"  {escape(full):<28} {escape(short)}")
    return lines


def _config_rows(s: Any) -> list[tuple[str, Any]]:
    return [
        ("endpoint", s.endpoint),
        ("host", s.host),
        ("port", s.port),
        ("runtime", s.runtime),
        ("data_dir", s.data_dir),
        ("models_dir (hub cache)", s.hub_cache),
        ("device", s.device),
        ("dtype", s.dtype),
        ("default_music_model", s.default_music_model),
        ("default_sound_model", s.default_sound_model),
        ("max_duration_s", s.max_duration_s),
        ("queue_depth", s.queue_depth),
        ("max_batch", s.max_batch),
        ("api_key", "set" if s.api_key else "not set"),
        ("log_level", s.log_level),
    ]


def load_runtime_json() -> dict[str, Any]:
    path = paths.runtime_json()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(
            f"{path} is missing", "run from the project checkout, or restore config/runtime.json"
        ) from None
    except ValueError as e:
        raise CliError(f"{path} is not valid JSON: {e}") from None
    missing = [f for f in RUNTIME_FIELDS if f not in data]
    if missing:
        raise CliError(f"{path} lacks {', '.join(missing)}")
    return data


def info_command(
    ctx: typer.Context,
    json_out: bool = typer.Option(
        False, "--json", help="As JSON: name, description, version, port, endpoint and config/runtime.json's fields"
    ),
) -> None:
    """Runtime facts for orchestrators: who this is, where it listens, and config/runtime.json."""
    from lib import __description__, __version__

    data = load_runtime_json()
    st = state(ctx)
    st.lenient = True  # a bad setting is a warning here, never a failure
    s = st.settings()
    if json_out:
        ui.print_json(
            {
                "name": "resource-audiocraft",
                "description": __description__,
                "version": __version__,
                "port": s.port,
                "endpoint": s.endpoint,
                **data,
            }
        )
        return
    ui.out.print(f"[bold]resource-audiocraft[/bold] {__version__} — {escape(__description__)}")
    rows = [(k, data[k]) for k in RUNTIME_FIELDS] + [
        ("port", s.port),
        ("endpoint", s.endpoint),
        ("runtime", s.runtime),
        ("health", f"{s.endpoint}/health"),
    ]
    for k, v in rows:
        value = json.dumps(v) if isinstance(v, list) else v
        ui.out.print(f"  {k:<22} {escape(str(value))}")


# --------------------------------------------------------------------------------------------------
# status


def probe_health(endpoint: str, api_key: str | None, timeout: float = 3.0) -> tuple[Any, str | None]:
    """(Health, None) when the service answers, else (None, why not). Never raises."""
    from cli.client import Client

    try:
        with Client(endpoint, api_key=api_key, timeout=timeout) as c:
            return c.health(timeout=timeout), None
    except CliError as e:
        return None, e.message
    except Exception as e:  # a malformed answer: treat as unhealthy, say why
        return None, f"unexpected /health answer: {str(e).splitlines()[0][:200]}"


# `status --fast`: the one /health call gets this long (the platform lists services with it, < 1 s).
FAST_HEALTH_TIMEOUT_S = 0.5


def collect_status(ctx: typer.Context, verbose: bool = False, fast: bool = False) -> dict[str, Any]:
    """The status; `fast`: the pid file or container state and one short /health call, nothing else."""
    st = state(ctx)
    s = st.settings()
    rt = st.runtime()
    rs: RuntimeStatus = rt.status()
    endpoint = rs.endpoint if rs.running else s.endpoint
    health, why = probe_health(endpoint, s.api_key, timeout=FAST_HEALTH_TIMEOUT_S if fast else 3.0)
    running = rs.running or health is not None
    healthy = health is not None and health.status == "ok"
    if not running:
        state_name = "stopped"
    elif health is None:
        state_name = "unreachable"
    else:
        state_name = health.status
    data: dict[str, Any] = {
        "running": running,
        "healthy": healthy,
        "status": state_name,
        "runtime": rs.runtime,
        "managed": rs.managed,
        "endpoint": endpoint,
        "port": rs.port if rs.running else s.port,
        "pid": rs.pid,
        "version": health.version if health else None,
        "device": health.device if health else None,
        "uptime_s": round(health.uptime_s, 1) if health else None,
        "models": [m.name for m in health.models] if health else [],
        "models_loaded": [m.model_dump() for m in health.models] if health else [],
        "queue": health.queue.model_dump() if health else None,
    }
    if rs.runtime == "docker":
        data["container"] = rs.detail.get("container")
        data["container_health"] = rs.detail.get("health")
    if running and health is None:
        data["error"] = why
    if verbose:
        data.update(
            {
                "data_dir": str(s.data_dir),
                "models_dir": str(s.hub_cache),
                "log_file": str(rs.log_file) if rs.log_file else None,
                "started_at": rs.started_at,
                "detail": rs.detail,
                "settings": {k: str(v) for k, v in _config_rows(s)},
            }
        )
        if health is not None and not fast:
            try:
                with st.client(endpoint, timeout=3.0) as c:
                    data["catalogue"] = [
                        {"name": m.name, "installed": m.installed, "loaded": m.loaded}
                        for m in c.models().models
                    ]
            except Exception as e:  # /api/models missing or slow: status still answers
                data["catalogue_error"] = str(e).splitlines()[0][:200] if str(e) else e.__class__.__name__
    return data


def status_command(
    ctx: typer.Context,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
    json_out: bool = typer.Option(False, "--json", help="Alias of --format json"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Add paths, settings and the model catalogue"
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help=f"Only the pid or container state and one /health call ({FAST_HEALTH_TIMEOUT_S:g} s timeout); "
        "no catalogue",
    ),
) -> None:
    """Is the service running and healthy? Exit 0 healthy, 1 running but unhealthy, 2 not running."""
    fmt = "json" if json_out else ui.check_format(fmt)
    state(ctx).lenient = True  # a bad setting is a warning here: status must still answer
    data = collect_status(ctx, verbose, fast)
    code = OK if data["healthy"] else FAILURE if data["running"] else SKIPPED
    if not ui.emit(data, fmt):
        _print_status_text(data, verbose)
    raise typer.Exit(code)


def _print_status_text(d: dict[str, Any], verbose: bool) -> None:
    out = ui.out
    if not d["running"]:
        out.print(f"resource-audiocraft: [bold]not running[/bold] ({d['runtime']} runtime; {d['endpoint']})")
        out.print("  start it with: resource-audiocraft manage start --wait")
    else:
        health = "[green]healthy[/green]" if d["healthy"] else f"[red]unhealthy[/red] ({escape(d['status'])})"
        out.print(f"resource-audiocraft: [bold]running[/bold], {health}")
        out.print(f"  endpoint   {d['endpoint']}  (port {d['port']})")
        if d.get("container"):
            who = f"container {d['container']}, health {d.get('container_health') or 'unknown'}"
        else:
            who = f"pid {d['pid']}" if d["pid"] else "not started by this CLI"
        out.print(f"  process    {who} ({d['runtime']} runtime)")
        if d["version"]:
            out.print(f"  version    {d['version']}   device {d['device']}   uptime {d['uptime_s']:.0f} s")
            loaded = (
                ", ".join(f"{m['name']} ({m['device']}, {m['dtype']})" for m in d["models_loaded"])
                or "none yet"
            )
            out.print(f"  models     {escape(loaded)}")
            q = d["queue"]
            out.print(f"  queue      {q['queued']} queued, {q['running']} running, capacity {q['capacity']}")
        if d.get("error"):
            out.print(f"  error      {escape(d['error'])}")
            out.print("  see: resource-audiocraft logs --tail 50")
    if verbose:
        for key in ("data_dir", "models_dir", "log_file"):
            out.print(f"  {key:<10} {escape(str(d.get(key)))}")
        if d.get("catalogue"):
            installed = [m["name"] for m in d["catalogue"] if m["installed"]]
            out.print(f"  installed  {escape(', '.join(installed) or 'none')}")


# --------------------------------------------------------------------------------------------------
# logs


def logs_command(
    ctx: typer.Context,
    tail: int = typer.Option(50, "--tail", "-n", min=0, help="Show the last N lines"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C ends)"),
    since: str | None = typer.Option(
        None, "--since", help="Only lines since 30s / 10m / 2h / 1d or a timestamp"
    ),
) -> None:
    """The server's log. Exit 2 when there are no logs yet."""
    from cli.logtools import parse_since

    since_dt = parse_since(since) if since else None
    rt = state(ctx).runtime()
    if not rt.has_logs():
        raise Skipped(
            "no logs yet: the service has not been started",
            "start it with `resource-audiocraft manage start`",
        )
    try:
        for line in rt.logs(tail=tail, since=since_dt, follow=follow):
            sys.stdout.write(line + "\n")
            if follow:
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# credentials


def _mask(secret: str) -> str:
    return "*" * 8 if len(secret) < 12 else f"{secret[:4]}{'*' * 8}{secret[-4:]}"


def credentials_command(
    ctx: typer.Context,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or env"),
    show_secrets: bool = typer.Option(False, "--show-secrets", help="Print the API key itself, not a mask"),
) -> None:
    """The API key clients send (Authorization: Bearer). Exit 2 when none is configured."""
    fmt = ui.check_format(fmt, ("text", "json", "env"))
    s = state(ctx).settings()
    if not s.api_key:
        raise Skipped(
            "no credentials configured: the service accepts requests without an API key",
            "set AUDIOCRAFT_API_KEY (for the service and its clients) to require one",
        )
    key = s.api_key if show_secrets else _mask(s.api_key)
    data = {
        "endpoint": s.endpoint,
        "auth": "bearer",
        "header": "Authorization",
        "api_key": key,
        "masked": not show_secrets,
    }
    if fmt == "json":
        ui.print_json(data)
    elif fmt == "env":
        sys.stdout.write(f"AUDIOCRAFT_ENDPOINT={s.endpoint}\nAUDIOCRAFT_API_KEY={key}\n")
    else:
        ui.out.print(f"endpoint  {s.endpoint}")
        ui.out.print(f"auth      Authorization: Bearer {escape(key)}")
        if not show_secrets:
            ui.out.print("[dim](masked; --show-secrets prints the key)[/dim]")


# --------------------------------------------------------------------------------------------------
# test

TEST_PHASES = ("smoke", "integration", "unit", "all")


def test_command(
    ctx: typer.Context,
    phase: str = typer.Argument("all", help="smoke, integration, unit or all"),
) -> None:
    """Run the project's tests through test/run-tests.sh (smoke checks the running service)."""
    if phase not in TEST_PHASES:
        raise CliError(f"invalid test phase {phase!r}", f"use one of: {', '.join(TEST_PHASES)}")
    st = state(ctx)
    s = st.settings()
    script = paths.tests_dir() / "run-tests.sh"
    if not script.is_file():
        raise CliError(f"{script} is missing", "run from the project checkout")
    from cli.runtime.native import settings_env

    env = {**os.environ, **settings_env(s)}
    # Smoke tests target the managed server where it really listens (it may run on another port).
    rs = st.runtime().status()
    if rs.running:
        env["AUDIOCRAFT_PORT"] = str(rs.port)
    started = time.monotonic()
    try:
        code = subprocess.call(["bash", str(script), phase], env=env, cwd=paths.project_root())
    except KeyboardInterrupt:
        code = 130
    ui.err.print(f"[dim]test {phase}: exit {code} in {time.monotonic() - started:.1f} s[/dim]")
    raise typer.Exit(code)
