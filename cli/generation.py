"""Submitting a generation, following its job with a progress bar, fetching the audio."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli import ui
from cli.client import Client
from cli.errors import CliError
from lib.schemas import STYLE_EXCERPT_MAX_S, STYLE_EXCERPT_MIN_S, Job

FORMATS = ("wav", "flac", "mp3", "ogg")
STREAM_FORMATS = ("wav", "pcm", "mp3", "ogg")  # what --stream can carry (flac cannot stream; pcm only can)
NORMALIZE = ("loudness", "peak", "none")
BIT_DEPTHS = (16, 24, 32)
TERMINAL = ("succeeded", "failed", "cancelled")
# Generation types as the API names them, and the client command aliases.
KINDS = ("music", "sound", "melody", "continuation", "style")
KIND_ALIASES = {"continue": "continuation"}


def split_format(
    value: str | None, output: Path | None, json_out: bool, stream: bool = False
) -> tuple[str | None, str]:
    """`--format` of the generation commands: an audio format, or json/text for the command's own
    output. Without an audio format, the --output extension picks it (x.flac: flac)."""
    formats = STREAM_FORMATS if stream else FORMATS
    out_format = "json" if json_out else "text"
    audio: str | None = None
    if value is not None:
        v = value.lower()
        if v in ("json", "text"):
            out_format = "json" if json_out else v
        elif v in formats:
            audio = v
        else:
            raise CliError(f"invalid --format {value!r}", f"use one of: {', '.join(formats)} (or json)")
    if audio is None and output is not None and output.suffix.lower().lstrip(".") in formats:
        audio = output.suffix.lower().lstrip(".")
    return audio, out_format


def build_request(
    prompt: str | None,
    duration: float | None = None,
    model: str | None = None,
    seed: int | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    cfg_coef: float | None = None,
    fmt: str | None = None,
    sample_rate: str | None = None,
    bit_depth: int | None = None,
    normalize: str | None = None,
    melody_start: float | None = None,
    melody_end: float | None = None,
    melody_stems: bool | None = None,
    include_prompt: bool | None = None,
    watermark: bool | None = None,
    decoder: str | None = None,
    mbd_steps: int | None = None,
    excerpt_length: float | None = None,
    eval_q: int | None = None,
    cfg_coef_beta: float | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Any]:
    """The request body from flags, checked locally so a typo costs no round trip. Unset flags are
    left out: the service's defaults apply (10 s of music, 5 s of sound, ...)."""
    if prompt is not None and not prompt.strip():
        raise CliError("--prompt must not be empty", 'e.g. --prompt "calm piano"')
    if duration is not None and duration <= 0:
        raise CliError(f"invalid --duration {duration:g}: must be more than 0 seconds")
    if seed is not None and seed < 0:
        raise CliError(f"invalid --seed {seed}: must be 0 or more")
    if fmt is not None and fmt.lower() not in formats:
        raise CliError(f"invalid --format {fmt!r}", f"use one of: {', '.join(formats)}")
    rate: int | str | None = None
    if sample_rate is not None:
        if sample_rate == "native":
            rate = "native"
        else:
            try:
                rate = int(sample_rate)
            except ValueError:
                raise CliError(
                    f"invalid --sample-rate {sample_rate!r}", "use a rate in Hz (44100) or 'native'"
                ) from None
    if bit_depth is not None and bit_depth not in BIT_DEPTHS:
        raise CliError(f"invalid --bit-depth {bit_depth}", "use 16, 24 or 32 (float)")
    if melody_start is not None and melody_start < 0:
        raise CliError(f"invalid --melody-start {melody_start:g}: must be 0 or more")
    if melody_end is not None and melody_end <= (melody_start or 0.0):
        raise CliError(f"invalid --melody-end {melody_end:g}: must come after --melody-start")
    if excerpt_length is not None and not STYLE_EXCERPT_MIN_S <= excerpt_length <= STYLE_EXCERPT_MAX_S:
        raise CliError(
            f"invalid --excerpt-length {excerpt_length:g}", f"use {STYLE_EXCERPT_MIN_S:g} to {STYLE_EXCERPT_MAX_S:g} s"
        )
    if normalize is not None and normalize not in NORMALIZE:
        raise CliError(f"invalid --normalize {normalize!r}", f"use one of: {', '.join(NORMALIZE)}")
    if decoder is not None and decoder not in ("encodec", "mbd"):
        raise CliError(f"invalid --decoder {decoder!r}", "use encodec or mbd (Multi-Band Diffusion)")
    body = {
        "prompt": prompt,
        "duration": duration,
        "model": model,
        "seed": seed,
        "top_k": top_k,
        "top_p": top_p,
        "temperature": temperature,
        "cfg_coef": cfg_coef,
        "format": fmt.lower() if fmt else None,
        "sample_rate": rate,
        "bit_depth": bit_depth,
        "normalize": normalize,
        "melody_start": melody_start,
        "melody_end": melody_end,
        "melody_stems": melody_stems,
        "include_prompt": include_prompt,
        "watermark": watermark,
        "decoder": decoder,
        "mbd_steps": mbd_steps,
        "excerpt_length": excerpt_length,
        "eval_q": eval_q,
        "cfg_coef_beta": cfg_coef_beta,
    }
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class Outcome:
    job_id: str | None
    path: Path
    seed: int | None
    model: str | None
    duration_s: float | None
    generation_time_s: float | None
    size_bytes: int
    format: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "output": str(self.path),
            "seed": self.seed,
            "model": self.model,
            "duration_s": self.duration_s,
            "generation_time_s": self.generation_time_s,
            "size_bytes": self.size_bytes,
            "format": self.format,
        }


def job_updates(client: Client, job_id: str, poll: float = 0.3) -> Iterator[Job]:
    """The job's server-sent events; polling GET /api/jobs/{id} if the stream breaks off."""
    try:
        for job in client.job_events(job_id):
            yield job
            if job.state in TERMINAL:
                return
    except CliError:
        pass
    while True:
        job = client.job(job_id)
        yield job
        if job.state in TERMINAL:
            return
        time.sleep(poll)


def follow_job(client: Client, job_id: str, progress: bool = True, poll: float = 0.3) -> Job:
    """Follow the job's progress events until it ends, drawing a bar. Ctrl-C cancels the job."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        console=ui.err,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task(f"job {job_id[:8]}", total=1.0, eta="")
            for job in job_updates(client, job_id, poll):
                if job.state == "queued":
                    desc = f"queued (position {job.position})" if job.position is not None else "queued"
                else:
                    desc = f"{job.kind} {job.state}"
                eta = f"eta {job.eta_s:.0f} s" if job.eta_s is not None and job.state == "running" else ""
                done = 1.0 if job.state == "succeeded" else job.progress
                if job.state == "queued" and job.download is not None:  # waiting for its model to download
                    got, total = job.download.bytes_done, job.download.bytes_total
                    desc = f"downloading {job.model} ({ui.human_bytes(got)} of {ui.human_bytes(total)})"
                    done = got / total if total else 0.0
                if job.training is not None and job.state == "running":  # a fine-tune: step and loss
                    t = job.training
                    desc = f"step {t.step}/{t.total_steps}  loss {t.loss:.4f}  lr {t.learning_rate:.2e}"
                bar.update(task, completed=done, description=desc, eta=eta)
                if job.state in TERMINAL:
                    return job
            raise CliError(f"lost track of job {job_id}")
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            client.cancel(job_id)
        raise CliError(f"interrupted: job {job_id} cancelled", code=130) from None


def job_failure(job: Job) -> CliError:
    if job.state == "cancelled":
        return CliError(f"job {job.id} was cancelled")
    if job.error is not None:
        return CliError(f"job {job.id} failed: {job.error.message}", job.error.hint)
    return CliError(f"job {job.id} failed", "see `resource-audiocraft logs`")


def generate(
    client: Client,
    kind: str,
    body: dict[str, Any],
    output: Path | None,
    input_file: Path | None = None,
    progress: bool = True,
    files: dict[str, Path] | None = None,
) -> Outcome:
    """Submit (async), follow, download. With `output` None the audio goes to a temp file the caller owns.
    `kind` is a generation kind or mix; `files` are more uploads (a mix's tracks: part -> file)."""
    fmt = body.get("format", "wav")
    t0 = time.monotonic()
    accepted = client.submit(kind, body, input_file=input_file, files=files)
    if output is None:
        fd, tmp = tempfile.mkstemp(prefix="audiocraft-", suffix=f".{fmt}")
        os.close(fd)
        output = Path(tmp)
    output = output.expanduser()
    if hasattr(accepted, "job"):
        job = follow_job(client, accepted.job.id, progress=progress)
        if job.state != "succeeded":
            raise job_failure(job)
        headers = client.download_audio(job.id, output)
        result = job.result
        return Outcome(
            job_id=job.id,
            path=output,
            seed=job.seed if job.seed is not None else _int(headers.get("X-Seed")),
            model=job.model or headers.get("X-Model"),
            duration_s=result.duration_s if result else _float(headers.get("X-Duration-S")),
            generation_time_s=(
                round(job.finished_at - job.started_at, 3)
                if job.finished_at and job.started_at
                else _float(headers.get("X-Generation-Time-S"))
            ),
            size_bytes=output.stat().st_size,
            format=result.format if result else fmt,
        )
    # The service answered with the audio itself (it ignored async): save it.
    resp = accepted
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(resp.content)
    h = resp.headers
    return Outcome(
        job_id=h.get("X-Job-Id"),
        path=output,
        seed=_int(h.get("X-Seed")),
        model=h.get("X-Model"),
        duration_s=_float(h.get("X-Duration-S")),
        generation_time_s=_float(h.get("X-Generation-Time-S")) or round(time.monotonic() - t0, 3),
        size_bytes=output.stat().st_size,
        format=fmt,
    )


def generate_here(
    client: Client,
    kind: str,
    body: dict[str, Any],
    output: Path | None,
    progress: bool = True,
    input_file: Path | None = None,
    files: dict[str, Path] | None = None,
) -> Outcome:
    """`generate` into `output`, or without one into ./<kind>-<job>.<format> (named once the job is known)."""
    if output is not None:
        return generate(client, kind, body, output, input_file=input_file, progress=progress, files=files)
    tmp = Path.cwd() / f".{kind}-{os.getpid()}.pending.{body.get('format', 'wav')}"
    outcome = generate(client, kind, body, tmp, input_file=input_file, progress=progress, files=files)
    final = Path.cwd() / f"{kind}-{(outcome.job_id or 'result')[:8]}.{outcome.format}"
    tmp.replace(final)
    outcome.path = final
    return outcome


def check_output(output: Path | None) -> Path | None:
    if output is None:
        return None
    output = output.expanduser()
    if output.is_dir():
        raise CliError(f"--output {output} is a directory", "give a file path, e.g. --output out.wav")
    if not output.parent.exists():
        raise CliError(f"--output: the directory {output.parent} does not exist", "create it first")
    return output


def resolve_input(value: str | None, data_dir: Path, what: str) -> Path | None:
    """An input audio given as a file path or as the name of an audio content item."""
    if value is None:
        return None
    p = Path(value).expanduser()
    if p.is_file():
        return p
    from lib.content import ContentError, ContentStore

    try:
        return ContentStore.for_data_dir(data_dir).resolve_audio(value)
    except ContentError:
        raise CliError(
            f"{what} {value!r} is neither a file nor an audio content item",
            "pass an existing audio file, or a name from `resource-audiocraft content list`",
        ) from None


def print_outcome(o: Outcome, fmt: str, extra: dict[str, Any] | None = None) -> None:
    data = {**o.as_dict(), **(extra or {})}
    if ui.emit(data, fmt):
        return
    dur = f"{o.duration_s:.1f} s" if o.duration_s is not None else "?"
    gen = f" in {o.generation_time_s:.1f} s" if o.generation_time_s is not None else ""
    ui.out.print(f"[green]✓[/green] {o.path}  ({dur} of audio, {ui.human_bytes(o.size_bytes)}, {o.format})")
    ui.out.print(f"  model {o.model}  seed {o.seed}  job {o.job_id}{gen}")
    if extra and extra.get("content"):
        ui.out.print(f"  saved as content [bold]{extra['content']}[/bold]")


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None
