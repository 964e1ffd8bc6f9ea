"""`models list|pull|make-tiny`."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import ui
from cli.context import state
from cli.errors import CliError
from lib.catalogue import CATALOGUE

app = typer.Typer(
    help="The model catalogue: what is installed and loaded; tiny offline models.", no_args_is_help=True
)


@app.command("list")
def list_models(
    ctx: typer.Context,
    server: str | None = typer.Option(None, "--server", help="Service URL (default: the settings' endpoint)"),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
    installed: bool = typer.Option(False, "--installed", help="Only installed models"),
) -> None:
    """The catalogue as the running service sees it: installed, size, loaded, licence."""
    fmt = ui.check_format(fmt)
    with state(ctx).client(server, timeout=10.0) as c:
        models = c.models().models
    if installed:
        models = [m for m in models if m.installed]
    if ui.emit({"models": models}, fmt):
        return
    rows = [
        [
            m.name,
            m.kind,
            ", ".join(m.capabilities),
            "yes" if m.installed else "no",
            ui.human_bytes(m.size_on_disk_bytes) if m.installed else "",
            f"{m.device}/{m.dtype}" if m.loaded else "",
            f"{m.sample_rate // 1000} kHz {'stereo' if m.channels == 2 else 'mono'}",
            m.licence,
        ]
        for m in models
    ]
    ui.table(["name", "kind", "does", "installed", "size", "loaded", "audio", "licence"], rows)


@app.command("pull")
def pull(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A catalogue name, e.g. musicgen-small"),
) -> None:
    """Download a model's weights from the Hugging Face hub into the hub cache."""
    if name not in CATALOGUE:
        raise CliError(f"unknown model {name!r}", f"known: {', '.join(CATALOGUE)}")
    from cli.commands.manage import pull_model

    st = state(ctx)
    rt = st.runtime()
    pull_model(st, name, python=getattr(rt, "python", None), runtime=rt)


@app.command("make-tiny")
def make_tiny(
    ctx: typer.Context,
    directory: Path = typer.Option(..., "--dir", help="Hub-cache directory to write (AUDIOCRAFT_MODELS_DIR)"),
    names: list[str] = typer.Option(
        [], "--name", help="Only these catalogue models (repeatable; default all)"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights"),
) -> None:
    """Write tiny random-weight checkpoints in hub-cache layout, to run the service offline."""
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise CliError(f"unknown model {', '.join(map(repr, unknown))}", f"known: {', '.join(CATALOGUE)}")
    try:
        from server.engine.tiny import write_tiny_models
    except ImportError as e:
        raise CliError(
            f"the engine is not installed in this environment ({e})",
            "run `resource-audiocraft manage install`",
        ) from None
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    with ui.err.status(f"writing tiny models into {directory} ..."):
        written = write_tiny_models(directory, names or None, seed=seed)
    ui.success(f"wrote {len(written)} tiny model(s) into {directory}")
    for n in written:
        ui.out.print(f"  {n}")
    ui.out.print(f"use them: AUDIOCRAFT_MODELS_DIR={directory} resource-audiocraft manage start --wait")
