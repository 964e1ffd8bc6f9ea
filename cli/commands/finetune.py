"""`datasets add|list|show|delete` and `finetune start|list|show|cancel`: fine-tuning on the service."""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

import typer
from rich.markup import escape

from cli import generation, ui
from cli.context import state
from cli.errors import CliError
from cli.options import SERVER
from lib.finetune import DatasetInfo, DatasetList
from lib.schemas import Job, JobList

datasets_app = typer.Typer(help="Datasets for fine-tuning: audio with captions, encoded once.", no_args_is_help=True)
app = typer.Typer(help="Fine-tune a model on a dataset (LoRA); the result is a catalogue model.", no_args_is_help=True)

FORMAT = typer.Option("text", "--format", "-f", help="text, json or yaml")
# A dataset build encodes every file: it may take minutes on a CPU.
BUILD_TIMEOUT_S = 3600.0


def _zip_folder(folder: Path, into: Path) -> Path:
    """The folder's files (audio, sidecar captions, metadata.jsonl), paths kept, as one ZIP."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CliError(f"{folder} holds no files", "point at a folder of audio files with captions, or a ZIP")
    with zipfile.ZipFile(into, "w", zipfile.ZIP_STORED) as z:  # audio does not compress
        for p in files:
            z.write(p, p.relative_to(folder).as_posix())
    return into


def _default_name(source: Path) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", source.stem.lower()).strip("-_")[:63] or "dataset"


def _show_dataset(d: DatasetInfo) -> None:
    ui.out.print(
        f"[bold]{escape(d.name)}[/bold]  {d.windows} windows, {d.duration_s:.1f} s  for {escape(d.model)} "
        f"({d.codec.codebooks} codebooks at {d.codec.sample_rate} Hz, windows of {d.window_s:g} s)"
    )
    rows = [
        [f.file, f.status, f"{f.duration_s:.1f} s" if f.duration_s else "", f.windows, f.caption_from or "",
         f.reason or (f.caption or "")[:40]]
        for f in d.files
    ]  # fmt: skip
    ui.table(["file", "status", "length", "windows", "caption from", "reason / caption"], rows)


@datasets_app.command("add")
def add(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., help="A folder of audio files (with .txt/.json sidecars or a metadata.jsonl) or a ZIP"
    ),
    name: str | None = typer.Option(None, "--name", help="The dataset's name (default: the folder's)"),
    model: str | None = typer.Option(
        None, "--model", help="The model whose codec encodes it (default: the music model)"
    ),
    caption: str = typer.Option("", "--caption", help="The caption of files without one of their own"),
    window_s: float | None = typer.Option(None, "--window-s", help="Windows of at most this many seconds"),
    server: str | None = SERVER,
    fmt: str = FORMAT,
) -> None:
    """Upload a dataset; it is checked, cut into windows and encoded to EnCodec codes on the server."""
    fmt = ui.check_format(fmt)
    source = source.expanduser()
    if not source.exists():
        raise CliError(f"{source} does not exist")
    fields = {"name": name or _default_name(source), "caption": caption}
    if model:
        fields["model"] = model
    if window_s is not None:
        fields["window_s"] = str(window_s)
    with tempfile.TemporaryDirectory() as tmp:
        archive = source if source.is_file() else _zip_folder(source, Path(tmp) / "dataset.zip")
        with state(ctx).client(server) as c, open(archive, "rb") as f:
            resp = c.request("POST", "/api/datasets", data=fields, files=[("files", (archive.name, f))],
                             timeout=BUILD_TIMEOUT_S)  # fmt: skip
    info = DatasetInfo.model_validate(resp.json())
    if not ui.emit(info, fmt):
        _show_dataset(info)


def _listing(ctx: typer.Context, server: str | None, fmt: str, path: str, schema, empty: str, columns, row) -> None:  # noqa: ANN001
    """GET `path` as `schema`, then as the format asks: JSON/YAML, or a table of `row(item)`."""
    fmt = ui.check_format(fmt)
    with state(ctx).client(server) as c:
        body = schema.model_validate(c.request("GET", path).json())
    if ui.emit(body, fmt):
        return
    items = body.datasets if isinstance(body, DatasetList) else body.jobs
    if not items:
        ui.out.print(empty)
        return
    ui.table(columns, [row(item) for item in items])


def _one(ctx: typer.Context, server: str | None, fmt: str, path: str, schema):  # noqa: ANN001, ANN202
    """GET `path` as `schema`; None when it was printed as JSON/YAML, else the item to show as text."""
    fmt = ui.check_format(fmt)
    with state(ctx).client(server) as c:
        item = schema.model_validate(c.request("GET", path).json())
    return None if ui.emit(item, fmt) else item


@datasets_app.command("list")
def list_datasets(ctx: typer.Context, server: str | None = SERVER, fmt: str = FORMAT) -> None:
    """The datasets on the service."""

    def row(d: DatasetInfo) -> list:
        return [d.name, d.model, d.windows, f"{d.duration_s:.1f} s", sum(f.status == "ok" for f in d.files)]

    columns = ["name", "model", "windows", "audio", "files used"]
    _listing(ctx, server, fmt, "/api/datasets", DatasetList, "No datasets.", columns, row)


@datasets_app.command("show")
def show_dataset(ctx: typer.Context, name: str = typer.Argument(...), server: str | None = SERVER,
                 fmt: str = FORMAT) -> None:  # fmt: skip
    """One dataset, with each file's report."""
    info = _one(ctx, server, fmt, f"/api/datasets/{name}", DatasetInfo)
    if info is not None:
        _show_dataset(info)


@datasets_app.command("delete")
def delete_dataset(ctx: typer.Context, name: str = typer.Argument(...), server: str | None = SERVER) -> None:
    """Delete a dataset."""
    with state(ctx).client(server) as c:
        c.request("DELETE", f"/api/datasets/{name}")
    ui.success(f"dataset {name} deleted")


@app.command("start")
def start(
    ctx: typer.Context,
    base_model: str = typer.Argument(..., help="The model to adapt (musicgen-small, ...)"),
    dataset: str = typer.Argument(..., help="A dataset made for its codec (`datasets add`)"),
    name: str = typer.Option(..., "--name", help="The new model: <base>+<label>, or the label"),
    rank: int | None = typer.Option(None, "--rank", help="LoRA rank (default 16)"),
    alpha: float | None = typer.Option(None, "--alpha", help="LoRA alpha (default 32)"),
    learning_rate: float | None = typer.Option(None, "--learning-rate", "--lr", help="Default 2e-4"),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps"),
    epochs: float | None = typer.Option(None, "--epochs", help="Or passes over the dataset (default 4)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Default 2"),
    seed: int | None = typer.Option(None, "--seed"),
    ffn: bool = typer.Option(False, "--ffn", help="Adapt the feed-forward projections too"),
    precision: str | None = typer.Option(
        None, "--precision", help="Autocast: auto (default), float32, bfloat16 or float16"
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow it with a progress bar (the default)"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text or json"),
) -> None:
    """Start a fine-tune job; by default follow it (step, loss, ETA) until the model is made."""
    fmt = ui.check_format(fmt, ("text", "json"))
    body = {"base_model": base_model, "dataset": dataset, "name": name, "ffn": ffn}
    optional = {"rank": rank, "alpha": alpha, "learning_rate": learning_rate, "steps": steps, "epochs": epochs,
                "batch_size": batch_size, "seed": seed, "precision": precision}  # fmt: skip
    body |= {k: v for k, v in optional.items() if v is not None}
    with state(ctx).client(server) as c:
        job = Job.model_validate(c.request("POST", "/api/finetune", json=body).json()["job"])
        if not wait:
            if fmt == "json":
                ui.print_json(job.model_dump(mode="json"))
            else:
                ui.success(f"fine-tune job {job.id} queued; follow it: resource-audiocraft finetune show {job.id}")
            return
        job = generation.follow_job(c, job.id)
    if fmt == "json":
        ui.print_json(job.model_dump(mode="json"))
    if job.state != "succeeded":
        raise generation.job_failure(job)
    if fmt == "text":
        made = job.request.get("name") or ""
        kind = "sound" if made.startswith("audiogen") else "melody" if "melody" in made.split("+")[0] else "music"
        ui.success(f"model {made} is ready: resource-audiocraft generate {kind} --model {made} ...")


@app.command("list")
def list_finetunes(ctx: typer.Context, server: str | None = SERVER, fmt: str = FORMAT) -> None:
    """Fine-tune jobs, newest first."""

    def row(j: Job) -> list:
        loss = f"{j.training.loss:.4f}" if j.training and j.training.loss is not None else ""
        return [j.id, j.state, f"{j.progress * 100:.0f}%", j.request.get("name"), j.request.get("dataset"), loss]

    columns = ["id", "state", "progress", "model", "dataset", "loss"]
    _listing(ctx, server, fmt, "/api/finetune", JobList, "No fine-tune jobs.", columns, row)


@app.command("show")
def show(ctx: typer.Context, job_id: str = typer.Argument(...), server: str | None = SERVER,
         fmt: str = FORMAT) -> None:  # fmt: skip
    """One fine-tune job: its settings, step, loss and ETA."""
    job = _one(ctx, server, fmt, f"/api/finetune/{job_id}", Job)
    if job is None:
        return
    r = job.request
    ui.out.print(
        f"[bold]{escape(job.id)}[/bold]  {job.state}  {job.progress * 100:.0f}%  -> {escape(str(r.get('name')))}"
    )
    settings = ("base_model", "dataset", "rank", "alpha", "learning_rate", "total_steps", "batch_size")
    ui.out.print("  " + "  ".join(f"{key} {r.get(key)}" for key in settings))
    if job.training is not None:
        t = job.training
        ui.out.print(f"  step {t.step}/{t.total_steps}  loss {t.loss}  lr {t.learning_rate:.2e}"
                     + (f"  eta {job.eta_s:.0f} s" if job.eta_s is not None else ""))  # fmt: skip
    if job.error:
        ui.out.print(f"  error {escape(job.error.message)}")


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: str = typer.Argument(...), server: str | None = SERVER) -> None:
    """Cancel a fine-tune job (its checkpoints go with it)."""
    with state(ctx).client(server) as c:
        c.request("DELETE", f"/api/finetune/{job_id}")
    ui.success(f"cancel requested for {job_id}")
