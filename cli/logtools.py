"""Log files: the last N lines, --since filtering, following a growing file."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from cli.errors import CliError

_STAMP = re.compile(r"^\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (30s, 10m, 2h, 1d; bare number = seconds) or a local
    timestamp (2025-01-31, 2025-01-31T12:00, 2025-01-31 12:00:05)."""
    now = now or datetime.now()
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"invalid --since {text!r}", "use a duration (30s, 10m, 2h, 1d) or a timestamp (2025-01-31T12:00)"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone().replace(tzinfo=None)
    return parsed


def line_time(line: str) -> datetime | None:
    m = _STAMP.match(line)
    if not m:
        return None
    try:
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    except ValueError:
        return None


def filter_since(lines: list[str], since: datetime) -> list[str]:
    """Lines at or after `since`; an unstamped line (a traceback, a print) belongs to the last stamp."""
    kept: list[str] = []
    current: datetime | None = None
    for line in lines:
        stamp = line_time(line)
        if stamp is not None:
            current = stamp
        if current is not None and current >= since:
            kept.append(line)
    return kept


def read_lines(path: Path, tail: int | None) -> list[str]:
    """The last `tail` lines of a file (all with None), reading only the end of big files."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if tail is None:
            f.seek(0)
            data = f.read()
        else:
            block, data = 64 * 1024, b""
            pos = size
            while pos > 0 and data.count(b"\n") <= tail:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines if tail is None else lines[-tail:] if tail > 0 else []


def follow(path: Path, poll: float = 0.25) -> Iterator[str]:
    """New lines appended to `path`, forever (until the caller stops iterating). Survives truncation."""
    f = open(path, "rb")  # noqa: SIM115 - closed in finally
    try:
        f.seek(0, os.SEEK_END)
        pending = b""
        while True:
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace")
                continue
            try:
                if os.stat(path).st_size < f.tell():  # truncated or replaced: start over
                    f.close()
                    f = open(path, "rb")  # noqa: SIM115
                    pending = b""
            except FileNotFoundError:
                pass
            time.sleep(poll)
    finally:
        f.close()
