"""Typer options that many commands share, declared once."""

from __future__ import annotations

import typer

SERVER = typer.Option(None, "--server", help="Service URL (default: the settings' endpoint)")
