"""`encode` and `decode`: EnCodec compression through the running service.

The file goes to POST /api/encode or /api/decode as the raw request body (streamed from disk,
never read whole) and the answer is streamed into the output file; a rich progress bar follows
the upload, the work on the service and the download. No torch here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from cli import ui
from cli.context import state
from cli.errors import CliError
from cli.options import SERVER

NO_PROGRESS = typer.Option(False, "--no-progress", help="No progress bar")
JSON_OUT = typer.Option(False, "--json", help="Print the result as JSON (for scripts)")
AUDIO_FORMATS = ("wav", "flac", "mp3", "ogg")
CHUNK = 1 << 16
# The service answers once the whole file is processed: no read timeout while it works.
_PROCESSING_TIMEOUT_S = 6 * 3600.0


def check_input(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise CliError(f"{path} is not a file", "give the path of an existing file")
    if path.stat().st_size == 0:
        raise CliError(f"{path} is empty")
    return path


def _check_output(output: Path, force: bool) -> Path:
    output = output.expanduser()
    if output.is_dir():
        raise CliError(f"--output {output} is a directory", "give a file path")
    if not output.parent.exists():
        raise CliError(f"--output: the directory {output.parent} does not exist", "create it first")
    if output.exists() and not force:
        raise CliError(f"{output} exists", "use --force to overwrite it")
    return output


def _transfer(
    ctx: typer.Context,
    server: str | None,
    path: str,
    source: Path,
    output: Path,
    params: dict[str, Any],
    what: str,
    progress: bool,
) -> dict[str, str]:
    """Upload `source` as the raw body, stream the answer into `output`; returns the answer's headers."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    size = source.stat().st_size
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=ui.err,
        disable=not progress,
        transient=True,
    )
    tmp = output.with_name(f".{output.name}.part")
    with bar, state(ctx).client(server) as client:
        up = bar.add_task("uploading", total=size)
        work = bar.add_task(what, total=None, visible=False)

        def body() -> Iterator[bytes]:
            with open(source, "rb") as f:
                while chunk := f.read(CHUNK):
                    bar.advance(up, len(chunk))
                    yield chunk
            bar.update(up, visible=False)
            bar.update(work, visible=True)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        params = {k: str(v) for k, v in params.items() if v is not None}
        try:
            with client.stream(
                "POST", path, params=params, content=body(), headers=headers, timeout=processing_timeout()
            ) as resp:
                bar.update(work, visible=False)
                total = resp.headers.get("content-length")
                down = bar.add_task("downloading", total=int(total) if total and total.isdigit() else None)
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        f.write(chunk)
                        bar.advance(down, len(chunk))
                answer = dict(resp.headers)
            tmp.replace(output)
        finally:
            tmp.unlink(missing_ok=True)
    return answer


def processing_timeout():
    import httpx

    return httpx.Timeout(30.0, read=_PROCESSING_TIMEOUT_S, write=_PROCESSING_TIMEOUT_S)


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def encode_command(
    ctx: typer.Context,
    input_file: Path = typer.Argument(..., help="Audio to compress: wav, flac, ogg, mp3 or m4a, any rate"),
    output: Path | None = typer.Option(None, "--output", "-o", help="The .ecdc to write (default: IN.ecdc)"),
    bandwidth: float | None = typer.Option(
        None, "--bandwidth", "-b", help="kbps: 1.5/3/6/12/24 (24 kHz), 3/6/12/24 (48 kHz), 2.2 (32 kHz); default 6"
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="encodec-24khz (default), encodec-48khz or encodec-32khz"
    ),
    codes_json: bool = typer.Option(False, "--codes-json", help="Write the codes as JSON instead of an .ecdc"),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file"),
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Compress audio with EnCodec into an .ecdc file (the encodec package's format)."""
    source = check_input(input_file)
    if bandwidth is not None and bandwidth <= 0:
        raise CliError(f"invalid --bandwidth {bandwidth:g}: must be more than 0 kbps")
    suffix = ".json" if codes_json else ".ecdc"
    output = _check_output(output or source.with_suffix(suffix), force)
    params = {"model": model, "bandwidth_kbps": bandwidth, "format": "json" if codes_json else None}
    t0 = time.monotonic()
    h = _transfer(ctx, server, "/api/encode", source, output, params, "encoding on the service", not no_progress)
    result = {
        "input": str(source),
        "output": str(output),
        "model": h.get("x-model"),
        "bandwidth_kbps": _float(h.get("x-bandwidth-kbps")),
        "codebooks": _float(h.get("x-codebooks")),
        "duration_s": _float(h.get("x-duration-s")),
        "input_bytes": source.stat().st_size,
        "output_bytes": output.stat().st_size,
        "compression_ratio": _float(h.get("x-compression-ratio")),
        "bitrate_kbps": _float(h.get("x-bitrate-kbps")),
        "seconds": round(time.monotonic() - t0, 3),
    }
    if json_out:
        ui.print_json(result)
        return
    ui.out.print(
        f"[green]✓[/green] {output}  ({ui.human_bytes(result['output_bytes'])} from "
        f"{ui.human_bytes(result['input_bytes'])}, {result['duration_s'] or 0:.1f} s of audio)"
    )
    ui.out.print(
        f"  {result['model']} at {h.get('x-bandwidth-kbps')} kbps: {h.get('x-compression-ratio')}:1 against "
        f"16-bit PCM, {h.get('x-bitrate-kbps')} kbps, in {result['seconds']:.1f} s"
    )


def decode_command(
    ctx: typer.Context,
    input_file: Path = typer.Argument(..., help="An .ecdc file (from `encode` or the encodec package)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Audio to write (default: IN.wav)"),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="wav, flac, mp3 or ogg (default: the --output extension, else wav)"
    ),
    sample_rate: str | None = typer.Option(None, "--sample-rate", help="Hz, or 'native' (the default)"),
    bit_depth: int | None = typer.Option(None, "--bit-depth", help="16 (default), 24 or 32 (float)"),
    normalize: str | None = typer.Option(None, "--normalize", help="none (default), peak or loudness"),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file"),
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Turn an .ecdc file back into audio, exactly as long as it was encoded."""
    source = check_input(input_file)
    if fmt is None:
        ext = (output.suffix.lower().lstrip(".") if output else "") or "wav"
        fmt = ext if ext in AUDIO_FORMATS else "wav"
    fmt = fmt.lower()
    if fmt not in AUDIO_FORMATS:
        raise CliError(f"invalid --format {fmt!r}", f"use one of: {', '.join(AUDIO_FORMATS)}")
    if sample_rate is not None and sample_rate != "native" and not sample_rate.isdigit():
        raise CliError(f"invalid --sample-rate {sample_rate!r}", "use a rate in Hz (44100) or 'native'")
    if bit_depth is not None and bit_depth not in (16, 24, 32):
        raise CliError(f"invalid --bit-depth {bit_depth}", "use 16, 24 or 32 (float)")
    if normalize is not None and normalize not in ("none", "peak", "loudness"):
        raise CliError(f"invalid --normalize {normalize!r}", "use none, peak or loudness")
    output = _check_output(output or source.with_suffix(f".{fmt}"), force)
    params = {"format": fmt, "sample_rate": sample_rate, "bit_depth": bit_depth, "normalize": normalize}
    t0 = time.monotonic()
    h = _transfer(ctx, server, "/api/decode", source, output, params, "decoding on the service", not no_progress)
    result = {
        "input": str(source),
        "output": str(output),
        "model": h.get("x-model"),
        "format": fmt,
        "sample_rate": _float(h.get("x-sample-rate")),
        "channels": _float(h.get("x-channels")),
        "samples": _float(h.get("x-audio-length")),
        "duration_s": _float(h.get("x-duration-s")),
        "output_bytes": output.stat().st_size,
        "seconds": round(time.monotonic() - t0, 3),
    }
    if json_out:
        ui.print_json(result)
        return
    ui.out.print(
        f"[green]✓[/green] {output}  ({result['duration_s'] or 0:.1f} s, {h.get('x-sample-rate')} Hz, "
        f"{h.get('x-channels')} ch, {ui.human_bytes(result['output_bytes'])}) from {result['model']} "
        f"in {result['seconds']:.1f} s"
    )
