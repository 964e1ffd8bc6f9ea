"""`jobs list|show|cancel|wait`."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from cli import generation, ui
from cli.context import state
from cli.errors import CliError
from cli.options import SERVER
from lib.schemas import Job

app = typer.Typer(help="Generation jobs on the service: list, inspect, cancel, wait.", no_args_is_help=True)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def _ago(t: float | None) -> str:
    if not t:
        return ""
    d = max(0.0, time.time() - t)
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago" if d < 7200 else f"{d / 3600:.1f} h ago"


def _prompt(job: Job) -> str:
    p = str(job.request.get("prompt") or "")
    return p if len(p) <= 40 else p[:39] + "…"


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state_: str | None = typer.Option(
        None, "--state", help="queued, running, succeeded, failed or cancelled"
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many"),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
) -> None:
    """Recent jobs, newest first."""
    fmt = ui.check_format(fmt)
    if state_ is not None and state_ not in STATES:
        raise CliError(f"invalid --state {state_!r}", f"use one of: {', '.join(STATES)}")
    with state(ctx).client(server) as c:
        jl = c.jobs(state=state_, limit=limit, offset=offset)
    if ui.emit(jl, fmt):
        return
    if not jl.jobs:
        ui.out.print("No jobs.")
        return
    rows = [
        [j.id, j.kind, j.state, f"{j.progress * 100:.0f}%", j.model, _prompt(j), _ago(j.created_at)]
        for j in jl.jobs
    ]
    ui.table(["id", "kind", "state", "progress", "model", "prompt", "created"], rows)
    if jl.total > len(jl.jobs):
        ui.out.print(f"[dim]{len(jl.jobs)} of {jl.total}; --limit/--offset page through[/dim]")


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job id"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
) -> None:
    """One job in detail."""
    fmt = ui.check_format(fmt)
    with state(ctx).client(server) as c:
        job = c.job(job_id)
    if ui.emit(job, fmt):
        return
    out = ui.out
    out.print(f"[bold]{escape(job.id)}[/bold]  {job.kind}  {job.state}  {job.progress * 100:.0f}%")
    out.print(f"  model     {escape(job.model)}   seed {job.seed}")
    if job.position is not None and job.state == "queued":
        out.print(f"  position  {job.position}")
    if job.eta_s is not None and job.state == "running":
        out.print(f"  eta       {job.eta_s:.0f} s")
    out.print(f"  created   {_ago(job.created_at)}")
    if job.started_at and job.finished_at:
        out.print(f"  took      {job.finished_at - job.started_at:.1f} s")
    if job.request.get("prompt"):
        out.print(f"  prompt    {escape(str(job.request['prompt']))}")
    if job.result:
        r = job.result
        out.print(f"  result    {r.duration_s:.1f} s {r.format}, {r.sample_rate} Hz, {r.channels} ch, "
                  f"{ui.human_bytes(r.size_bytes)}")  # fmt: skip
        out.print(f"  audio     resource-audiocraft jobs wait {job.id} --output out.{r.format}")
    if job.error:
        out.print(
            f"  error     {escape(job.error.message)}"
            + (f" ({escape(job.error.hint)})" if job.error.hint else "")
        )


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job id"),
    server: str | None = SERVER,
) -> None:
    """Cancel a queued or running job."""
    with state(ctx).client(server) as c:
        job = c.cancel(job_id)
    ui.success(f"cancel requested for {job_id}" + (f" (now {job.state})" if job else ""))


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job id"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the audio here when it succeeds"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text or json"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
) -> None:
    """Wait for a job with a progress bar; exit 0 when it succeeds, 1 when it fails or is cancelled."""
    fmt = ui.check_format(fmt, ("text", "json"))
    output = generation.check_output(output)
    with state(ctx).client(server) as c:
        job = generation.follow_job(c, job_id, progress=not no_progress)
        if job.state == "succeeded" and output is not None:
            c.download_audio(job.id, output)
    if fmt == "json":
        ui.print_json({**job.model_dump(mode="json"), **({"output": str(output)} if output else {})})
    if job.state != "succeeded":
        raise generation.job_failure(job)
    if fmt == "text":
        ui.success(f"job {job.id} succeeded" + (f"; audio in {output}" if output else ""))
