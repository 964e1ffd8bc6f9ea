"""`watermark detect FILE`: is this audio watermarked? AudioSeal's verdict from the running service
(POST /api/watermark/detect, the file as a multipart upload). No torch here."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import ui
from cli.commands.codec import JSON_OUT, check_input, processing_timeout
from cli.context import state
from cli.options import SERVER
from lib.schemas import WatermarkDetection

app = typer.Typer(help="AudioSeal watermarks: detect them in audio (embed them with `generate ... --watermark`).")


@app.command("detect")
def detect_command(
    ctx: typer.Context,
    input_file: Path = typer.Argument(..., help="Audio to check: wav, flac, ogg, mp3 or m4a, any rate and channels"),
    model: str | None = typer.Option(None, "--model", "-m", help="The watermark model (audioseal, the default)"),
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
) -> None:
    """Is this audio watermarked? AudioSeal's detection score and, when it finds the mark, its 16-bit message."""
    source = check_input(input_file)
    with state(ctx).client(server) as client, open(source, "rb") as f:
        resp = client.request(
            "POST",
            "/api/watermark/detect",
            data={"model": model} if model else {},
            files={"audio": (source.name, f, "application/octet-stream")},
            timeout=processing_timeout(),
        )
    verdict = WatermarkDetection.model_validate(resp.json())
    if json_out:
        ui.print_json({"input": str(source), **verdict.model_dump()})
        return
    if verdict.detected:
        ui.out.print(
            f"[green]✓[/green] {source}: watermarked ({verdict.model}, score {verdict.score:.3f}; "
            f"message {verdict.message} = {verdict.message_bits})"
        )
    else:
        ui.out.print(f"[yellow]✗[/yellow] {source}: no watermark found ({verdict.model}, score {verdict.score:.3f})")
    if len(verdict.channels) > 1:
        scores = ", ".join(f"{c.score:.3f}" for c in verdict.channels)
        ui.out.print(f"  per channel: {scores} (threshold {verdict.threshold:g})")
