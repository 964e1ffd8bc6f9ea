"""`mix`: lay tracks out in time and mix them with the running service (POST /api/mix)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import generation
from cli import mix as tracks_of
from cli.commands.generate import BIT_DEPTH, FORMAT, JSON_OUT, NO_PROGRESS, NORMALIZE
from cli.context import state
from cli.options import SERVER

TRACK = typer.Option(..., "--track", "-t", help=tracks_of.TRACK_HELP)
DURATION = typer.Option(None, "--duration", "-d", help="Seconds of the mix (default: where the last track ends)")
CHANNELS = typer.Option(None, "--channels", help="1 or 2 (default: 2 when a track is stereo or panned)")
DUCK = typer.Option(None, "--duck", help="Lower the music tracks by this many dB while an effect or voice track sounds")
DUCK_ATTACK = typer.Option(None, "--duck-attack", help="Seconds the music takes to go down (default 0.05)")
DUCK_RELEASE = typer.Option(None, "--duck-release", help="Seconds it takes to come back up (default 0.3)")
SAMPLE_RATE = typer.Option(None, "--sample-rate", help="Hz (default 44100) or 'native' (the tracks' highest)")
OUTPUT = typer.Option(None, "--output", "-o", help="Where to write the mix (default ./mix-<job>.<fmt>)")


def mix_command(
    ctx: typer.Context,
    track: list[str] = TRACK,
    output: Path | None = OUTPUT,
    duration: float | None = DURATION,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    channels: int | None = CHANNELS,
    duck: float | None = DUCK,
    duck_attack: float | None = DUCK_ATTACK,
    duck_release: float | None = DUCK_RELEASE,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Mix tracks into one file: offsets, gain, fades, trims, loops, pan and ducking, normalised as generation is.

    Each --track is SOURCE\\[@OFFSET_S]\\[:GAIN_dB]\\[,KEY=VALUE...], for example music.wav@0:-3dB,fade_out=2.

    SOURCE: an audio file, job:ID (an earlier job's audio) or content:NAME (an audio content item, uploaded).

    KEY: offset, gain, fade_in, fade_out, trim_start, trim_end, loop_crossfade (seconds; gain in dB).

    KEY: pan (-1 left to 1 right); role (music, effect, voice: with --duck, music goes down under the others); loop.

    resource-audiocraft mix --track music.wav@0:-3dB --track thunder.wav@2.5 -o scene.wav

    resource-audiocraft mix -t rain.wav,loop,fade_in=2 -t job:1a2b3c4d@4,role=voice --duck 9 -d 30 -o ad.mp3
    """
    st = state(ctx)
    output = generation.check_output(output)
    fmt, out_format = generation.split_format(audio_format, output, json_out)
    tracks = tracks_of.from_specs(track, st.settings().data_dir)
    body = tracks_of.request_body(
        tracks, duration, fmt, sample_rate, bit_depth, normalize, channels, duck, duck_attack, duck_release
    )
    with st.client(server) as client:
        outcome = generation.generate_here(client, "mix", body, output, not no_progress, files=tracks.files)
    generation.print_outcome(outcome, out_format)
