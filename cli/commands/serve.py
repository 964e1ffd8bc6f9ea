"""`serve`: run the server in the foreground (what `manage start` runs detached)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cli import ui
from cli.context import state
from cli.errors import CliError
from lib.settings import UNSAFE_BIND_HINT


def serve_command(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="Port (default 7862)"),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Hub-cache directory with the weights"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Jobs, artifacts, content, logs"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
    dtype: str | None = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16"),
    max_batch: int | None = typer.Option(None, "--max-batch", help="Requests decoded together"),
    queue_depth: int | None = typer.Option(None, "--queue-depth", help="Queued jobs before 429"),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Longest audio one request may ask"),
    torch_threads: int | None = typer.Option(None, "--torch-threads", help="Threads for torch (0 = per core)"),
    log_level: str | None = typer.Option(None, "--log-level", help="debug, info, warning or error"),
    role: str | None = typer.Option(
        None,
        "--role",
        help="all (API and lanes, the default), api (no model, no torch) or worker; api/worker need a queue URL",
    ),
    queue_url: str | None = typer.Option(
        None, "--queue-url", help="redis://host:6379/0: the job queue API nodes and workers share (default: SQLite)"
    ),
) -> None:
    """Run the server in the foreground (Ctrl-C stops it). Flags override AUDIOCRAFT_* settings."""
    settings = state(ctx).settings(
        host=host,
        port=port,
        models_dir=models_dir,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        max_batch=max_batch,
        queue_depth=queue_depth,
        max_duration_s=max_duration,
        torch_threads=torch_threads,
        log_level=log_level,
        role=role,
        queue_url=queue_url,
    )
    problem = settings.unsafe_bind()
    if problem is not None:
        raise CliError(problem, UNSAFE_BIND_HINT)
    try:
        from server.main import serve
    except ImportError as e:
        raise CliError(
            f"the server is not installed in this environment ({e})",
            "run `resource-audiocraft manage install`",
        ) from None
    if sys.stderr.isatty():
        ui.info(f"serving on {settings.endpoint} (models: {settings.hub_cache}, data: {settings.data_dir})")
    serve(settings)
