"""`models list|info|pull|rm|import|make-tiny`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from cli import ui
from cli.context import state
from cli.errors import CliError
from cli.options import SERVER
from lib.catalogue import CATALOGUE

app = typer.Typer(
    help="The model catalogue: what is installed and loaded; download, remove, import; tiny offline models.",
    no_args_is_help=True,
)


@app.command("list")
def list_models(
    ctx: typer.Context,
    server: str | None = SERVER,
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
            ", ".join(m.aliases),
            m.kind,
            ", ".join(m.capabilities),
            "yes" if m.installed else "no",
            ui.human_bytes(m.size_on_disk_bytes) if m.installed else "",
            f"{m.device}/{m.dtype}, {ui.human_bytes(m.memory_bytes)}" if m.loaded else "",
            f"{m.sample_rate // 1000} kHz {'stereo' if m.channels == 2 else 'mono'}",
            m.licence,
        ]
        for m in models
    ]
    ui.table(["name", "aliases", "kind", "does", "installed", "size", "loaded", "audio", "licence"], rows)


_ENGINE_HINT = "start the service (`resource-audiocraft manage start`) or run `resource-audiocraft manage install`"


@contextlib.contextmanager
def _engine_installed(hint: str = _ENGINE_HINT) -> Iterator[None]:
    """Around the plain imports of server modules, for the commands that work on the model files
    in-process: the hub needs huggingface_hub, which only the `server` extra installs, so a missing
    module becomes a CliError that says what to do."""
    try:
        yield
    except ImportError as e:
        raise CliError(f"the engine is not installed in this environment ({e})", hint) from None


def _spec(name: str):
    """The catalogue entry for a name or an alias; an unknown name names the close ones."""
    from lib.catalogue import UnknownModel, get_spec

    try:
        return get_spec(name)
    except UnknownModel as e:
        raise CliError(e.message, "`resource-audiocraft models list` shows every name and alias") from None


def _server_or_here(st, server: str | None, by_server, here):  # noqa: ANN001, ANN202
    """Ask the running service; when none runs (and no --server was named), do it here."""
    from cli.errors import ServiceDown

    with st.client(server, timeout=60.0) as c:
        try:
            return by_server(c)
        except ServiceDown:
            if server is not None:
                raise
    return here()


def _byte_bar(progress: bool):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=ui.err,
        disable=not progress,
    )


def _follow_download(client, job_id: str, name: str, progress: bool):  # noqa: ANN001, ANN202
    """Follow the download job's events with a byte progress bar; its final state."""
    from cli.generation import TERMINAL, job_updates

    with _byte_bar(progress) as bar:
        task = bar.add_task(f"{name}", total=None)
        for job in job_updates(client, job_id):
            if job.download is not None and job.download.bytes_total:
                bar.update(task, total=job.download.bytes_total, completed=job.download.bytes_done)
            if job.state in TERMINAL:
                if job.state == "succeeded" and bar.tasks[0].total:
                    bar.update(task, completed=bar.tasks[0].total)
                return job
    raise CliError(f"lost track of download job {job_id}")


def _pull_in_process(st, spec, progress: bool) -> None:  # noqa: ANN001
    with _engine_installed():
        from server.hub import download
    hub = st.settings().hub_cache
    ui.info(f"the service is not running: downloading {spec.name} here, into {hub}")
    with _byte_bar(progress) as bar:
        task = bar.add_task(spec.name, total=None)
        try:
            download.download_model(
                spec,
                hub,
                timeout_s=st.settings().download_timeout_s,
                progress=lambda done, total, _name: bar.update(task, total=total, completed=done),
            )
        except download.DownloadFailed as e:
            raise CliError(f"could not download {spec.name}: {e.message}", e.hint) from None
        except KeyboardInterrupt:
            raise CliError("interrupted; run the same command again to resume the download", code=130) from None


@app.command("pull")
def pull(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A catalogue name or an alias, e.g. musicgen-small or small"),
    server: str | None = SERVER,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Draw a progress bar"),
) -> None:
    """Download a model (only the files the engine needs) into the hub cache, resuming a cut one.

    With the service running, the service downloads it as a job and this follows the job's progress
    (Ctrl-C leaves it running). Without, it downloads here, into the same hub cache."""
    from cli.errors import ServiceDown
    from cli.generation import job_failure

    spec = _spec(name)
    name = spec.name  # an alias becomes the catalogue name
    st = state(ctx)
    with st.client(server, timeout=30.0) as c:
        try:
            resp = c.request("POST", f"/api/models/{name}/download")
        except ServiceDown:
            if server is not None:
                raise
            rt = st.runtime()
            if rt.name == "docker":  # the weights belong in the container's model volume
                from cli.commands.manage import pull_model

                pull_model(st, name, runtime=rt)
                return
            _pull_in_process(st, spec, progress)
            ui.success(f"{name} is installed in {st.settings().hub_cache}")
            return
        if resp.status_code == 200:
            ui.success(f"{name} is already installed")
            return
        job_id = resp.json()["job"]["id"]
        try:
            job = _follow_download(c, job_id, name, progress)
        except KeyboardInterrupt:
            raise CliError(f"stopped following; the download goes on as job {job_id}", code=130) from None
        if job.state != "succeeded":
            raise job_failure(job)
        info = c.request("GET", f"/api/models/{name}").json()
    ui.success(f"{name} is installed ({ui.human_bytes(info['size_on_disk_bytes'])})")


@app.command("rm")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A catalogue name or an alias"),
    server: str | None = SERVER,
    yes: bool = typer.Option(False, "--yes", "-y", help="No confirmation"),
) -> None:
    """Delete a model's files from the hub cache (unloading it first). Refused while jobs use it."""
    spec = _spec(name)
    name = spec.name
    st = state(ctx)
    if not yes and ui.is_interactive() and not typer.confirm(f"Delete the files of {name}?", default=False):
        raise CliError("nothing deleted")

    def by_server(c) -> int:  # noqa: ANN001
        before = c.request("GET", f"/api/models/{name}").json()["size_on_disk_bytes"]
        c.request("DELETE", f"/api/models/{name}")
        return before

    def here() -> int:
        with _engine_installed():
            from server.hub import store
        return store.remove_model(spec, st.settings().hub_cache)

    freed = _server_or_here(st, server, by_server, here)
    ui.success(f"{name} removed; {ui.human_bytes(freed)} freed")


@app.command("info")
def info(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A catalogue name or an alias"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
) -> None:
    """One model: what it does, installed, size, loaded (device, dtype, memory), licence."""
    fmt = ui.check_format(fmt)
    spec = _spec(name)
    name = spec.name
    st = state(ctx)

    def here() -> dict:
        with _engine_installed():
            from server.hub import store
        hub = st.settings().hub_cache
        return {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "repo": spec.repo,
            "kind": spec.kind,
            "capabilities": list(spec.capabilities),
            "installed": store.is_installed(spec, hub),
            "size_on_disk_bytes": store.size_on_disk_bytes(spec, hub),
            "loaded": False,
            "licence": spec.licence,
            "sample_rate": spec.sample_rate,
            "channels": spec.channels,
        }

    data = _server_or_here(st, server, lambda c: c.request("GET", f"/api/models/{name}").json(), here)
    if ui.emit(data, fmt):
        return
    rows = [
        ["aliases", ", ".join(data.get("aliases") or spec.aliases)],
        ["repo", data["repo"] + "".join(f", {r}" for r in spec.extra_repos)],
        ["does", ", ".join(data["capabilities"])],
        ["installed", "yes" if data["installed"] else "no"],
        ["size on disk", ui.human_bytes(data["size_on_disk_bytes"])],
        ["loaded", f"{data['device']}/{data['dtype']}" if data["loaded"] else "no"],
        ["memory", ui.human_bytes(data.get("memory_bytes")) if data["loaded"] else ""],
        ["audio", f"{data['sample_rate']} Hz, {data['channels']} channel(s)"],
        ["licence", data["licence"]],
    ]
    ui.table(["", data["name"]], rows)


@app.command("import")
def import_model(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., help="A folder or a .tar(.gz)/.zip archive of one: a hub cache or snapshot, or an audiocraft export"
    ),
    name: str | None = typer.Option(None, "--name", help="The catalogue model, when the source does not say"),
    force: bool = typer.Option(False, "--force", help="Replace the model if it is installed"),
) -> None:
    """Check and install a model copied from another machine (no network needed)."""
    if name is not None and "+" not in name:  # a fine-tuned model's name is new to the catalogue
        name = _spec(name).name
    with _engine_installed():
        from server.hub import importer, store
    hub = state(ctx).settings().hub_cache
    try:
        with ui.err.status(f"checking and installing {source} ..."):
            done = importer.import_model(source, hub, name=name, force=force)
    except importer.ImportFailed as e:
        raise CliError(f"cannot import: {e}", "nothing was installed") from None
    except FileExistsError as e:
        raise CliError(str(e), "pass --force to replace it") from None
    for item in done:
        ui.success(f"{item.repo} installed ({len(item.files)} files, {ui.human_bytes(item.size_bytes)}) in {hub}")
    needs = [s.name for s in CATALOGUE.values() if any(s.repo == i.repo for i in done)]
    for model in needs:
        spec = _spec(model)
        if not store.is_installed(spec, hub):
            missing = [r for r in spec.extra_repos if store.current_revision(r, hub) is None]
            ui.warn(f"{model} also needs {', '.join(missing)}: import it too (or `models pull {model}`)")


@app.command("export")
def export_model(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="An installed model (a fine-tuned one too)"),
    dest: Path | None = typer.Option(None, "--output", "-o", help="The archive (default: ./<name>.tar.gz)"),
) -> None:
    """Write an installed model as a .tar.gz that `models import` installs on another machine."""
    with _engine_installed():
        from server.hub import finetuned, importer
    hub = state(ctx).settings().hub_cache
    if "+" in name:
        finetuned.refresh(hub)
    spec = _spec(name)
    out = importer.export_model(spec, hub, dest or Path(f"{spec.name}.tar.gz"))
    ui.success(f"{spec.name} written to {out} ({ui.human_bytes(out.stat().st_size)})")
    if spec.base:
        ui.info(f"it is an adapter: the other machine needs {spec.base} installed too")


@app.command("make-tiny")
def make_tiny(
    ctx: typer.Context,
    directory: Path = typer.Option(..., "--dir", help="Hub-cache directory to write (AUDIOCRAFT_MODELS_DIR)"),
    names: list[str] = typer.Option([], "--name", help="Only these catalogue models (repeatable; default all)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights"),
) -> None:
    """Write tiny random-weight checkpoints in hub-cache layout, to run the service offline."""
    names = [_spec(n).name for n in names]
    with _engine_installed("run `resource-audiocraft manage install`"):
        from server.tiny.write import write_tiny_models
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    with ui.err.status(f"writing tiny models into {directory} ..."):
        written = write_tiny_models(directory, names or None, seed=seed)
    ui.success(f"wrote {len(written)} tiny model(s) into {directory}")
    for n in written:
        ui.out.print(f"  {n}")
    ui.out.print(f"use them: AUDIOCRAFT_MODELS_DIR={directory} resource-audiocraft manage start --wait")
