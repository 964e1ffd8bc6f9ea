"""Output: rich for people (stderr for chatter, stdout for results), JSON/YAML for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output is not cut to 80 columns: tables stay whole for grep and logs.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

TEXT_FORMATS = ("text", "json", "yaml")


def check_format(fmt: str, allowed: Sequence[str] = TEXT_FORMATS) -> str:
    from cli.errors import CliError

    fmt = fmt.lower()
    if fmt not in allowed:
        raise CliError(f"invalid --format {fmt!r}", f"use one of: {', '.join(allowed)}")
    return fmt


def to_jsonable(data: Any) -> Any:
    if hasattr(data, "model_dump"):
        return data.model_dump(mode="json", by_alias=True)
    if isinstance(data, dict):
        return {k: to_jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [to_jsonable(v) for v in data]
    return data


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_yaml(data: Any) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(to_jsonable(data), sort_keys=False, default_flow_style=False))
    sys.stdout.flush()


def emit(data: Any, fmt: str) -> bool:
    """Print `data` as JSON or YAML when asked; False means the caller prints text."""
    if fmt == "json":
        print_json(data)
        return True
    if fmt == "yaml":
        print_yaml(data)
        return True
    return False


def info(msg: str) -> None:
    err.print(msg)


def success(msg: str) -> None:
    err.print(f"[green]✓[/green] {msg}")


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(msg)}")


def error_line(message: str, hint: str | None = None) -> None:
    err.print(f"[red]error:[/red] {escape(message)}")
    if hint:
        err.print(f"  [dim]→[/dim] {escape(hint)}")


def skipped_line(message: str, hint: str | None = None) -> None:
    """The contract's exit-2 cases (already running, not found, ...): not an error, nothing was done."""
    err.print(f"[yellow]skipped:[/yellow] {escape(message)}")
    if hint:
        err.print(f"  [dim]→[/dim] {escape(hint)}")


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    t = Table(title=title, header_style="bold", show_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else escape(str(v)) for v in r])
    out.print(t)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()
