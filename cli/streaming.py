"""`generate ... --stream`: the audio written (to a file, or to stdout with `-o -`) and played as it
arrives, from the service's streamed answer ("stream": true). Ctrl-C, or a player that quits, closes
the connection, and the service cancels the job at its next step."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from cli import ui
from cli.client import GENERATE_PATHS, Client
from cli.errors import CliError
from cli.generation import Outcome, job_failure
from lib.schemas import INPUT_FIELDS

STREAM_FORMATS = ("wav", "pcm", "mp3", "ogg")
STDOUT = Path("-")


def player_command(fmt: str, rate: int, channels: int, sample_format: str | None) -> list[str] | None:
    """A player that reads the stream from its stdin: ffplay (any format), else aplay (wav, pcm)."""
    ffplay = shutil.which("ffplay")
    if ffplay:
        raw = ["-f", sample_format or "s16le", "-ar", str(rate), "-ch_layout", "mono" if channels == 1 else "stereo"]
        return [ffplay, "-nodisp", "-autoexit", "-loglevel", "error", *(raw if fmt == "pcm" else []), "-i", "-"]
    aplay = shutil.which("aplay")
    if aplay and fmt in ("wav", "pcm"):
        depth = {"s16le": "S16_LE", "s24le": "S24_3LE", "f32le": "FLOAT_LE"}[sample_format or "s16le"]
        raw = ["-t", "raw", "-f", depth, "-r", str(rate), "-c", str(channels)] if fmt == "pcm" else []
        return [aplay, "-q", *raw, "-"]
    return None


def check_player(fmt: str) -> None:
    """Refuse --play before anything is generated when no player could play `fmt`."""
    if shutil.which("ffplay") or (shutil.which("aplay") and fmt in ("wav", "pcm")):
        return
    raise CliError(
        f"--play: no player for {fmt} on this machine",
        "install ffmpeg (ffplay) or alsa-utils (aplay, for wav and pcm), or leave --play out",
    )


@contextlib.contextmanager
def _request(client: Client, kind: str, body: dict[str, Any], input_file: Path | None) -> Iterator[httpx.Response]:
    """The streamed answer; no read timeout (audio comes as fast as the service makes it)."""
    path = GENERATE_PATHS[kind]
    body = {k: v for k, v in body.items() if v is not None} | {"stream": True}
    timeout = httpx.Timeout(30.0, read=None)
    if input_file is None:
        with client.stream("POST", path, json=body, timeout=timeout) as resp:
            yield resp
        return
    form = {k: (json.dumps(v) if isinstance(v, bool | dict | list) else str(v)) for k, v in body.items()}
    with open(input_file, "rb") as f:
        files = {INPUT_FIELDS[kind]: (input_file.name, f, "application/octet-stream")}
        with client.stream("POST", path, data=form, files=files, timeout=timeout) as resp:
            yield resp


def stream_generation(
    client: Client,
    kind: str,
    body: dict[str, Any],
    output: Path | None,
    input_file: Path | None = None,
    play: bool = False,
    progress: bool = True,
) -> Outcome:
    """Write (and play) the stream as it arrives. `output` None: ./<kind>-<job>.<format>."""
    fmt = body.get("format", "wav")
    if play:
        check_player(fmt)
    started = time.monotonic()
    received = 0
    player: subprocess.Popen | None = None
    sink: IO[bytes] | None = None
    try:
        with _request(client, kind, body, input_file) as resp:
            h = resp.headers
            job_id = h.get("X-Job-Id", "stream")
            path = output if output is not None else Path.cwd() / f"{kind}-{job_id[:8]}.{fmt}"
            sink = sys.stdout.buffer if path == STDOUT else open(path, "wb")  # noqa: SIM115 - closed below
            if play:
                rate, channels = int(h.get("X-Sample-Rate", "44100")), int(h.get("X-Channels", "1"))
                command = player_command(fmt, rate, channels, h.get("X-Sample-Format"))
                assert command is not None  # check_player said there is one
                player = subprocess.Popen(command, stdin=subprocess.PIPE)
            with ui.err.status("streaming", spinner="dots") if progress else contextlib.nullcontext() as status:
                for chunk in resp.iter_raw():
                    sink.write(chunk)
                    sink.flush()
                    received += len(chunk)
                    if player is not None and not _feed(player, chunk):
                        player = None  # the player quit: go on writing
                    if status is not None:
                        status.update(f"streaming job {job_id[:8]}: {ui.human_bytes(received)}")
    except KeyboardInterrupt:
        raise CliError("interrupted: the stream closed, so the service cancels the job", code=130) from None
    finally:
        if sink is not None and sink is not sys.stdout.buffer:
            sink.close()
        if player is not None:
            with contextlib.suppress(OSError):
                player.stdin.close()
            player.wait()
    job = client.job(job_id)
    if job.state != "succeeded":
        raise job_failure(job)
    return Outcome(
        job_id=job_id,
        path=path,
        seed=job.seed,
        model=job.model,
        duration_s=job.result.duration_s if job.result else None,
        generation_time_s=round(time.monotonic() - started, 3),
        size_bytes=received,
        format=fmt,
    )


def _feed(player: subprocess.Popen, chunk: bytes) -> bool:
    try:
        player.stdin.write(chunk)
        player.stdin.flush()
    except (BrokenPipeError, OSError):
        return False
    return True
