"""`generate music|sound|melody|style|continue`: talk to the service, write the audio to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from cli import generation, streaming, ui
from cli.context import state
from cli.errors import CliError
from cli.options import SERVER

app = typer.Typer(
    help="Generate audio with the running service (a progress bar, then a file).", no_args_is_help=True
)

PROMPT = typer.Option(None, "--prompt", "-p", help="What to generate (1-2000 characters)")
DURATION = typer.Option(
    None, "--duration", "-d", help="Seconds of audio (service default: 10 music, 5 sound)"
)
MODEL = typer.Option(
    None, "--model", "-m", help="Catalogue model name or alias, e.g. small (default from the service settings)"
)
SEED = typer.Option(None, "--seed", help="Random seed (drawn when absent; always reported)")
TOP_K = typer.Option(None, "--top-k", help="Sample among the k most likely tokens (default 250)")
TOP_P = typer.Option(None, "--top-p", help="Nucleus sampling, 0 = off (default 0)")
TEMPERATURE = typer.Option(None, "--temperature", help="0 = greedy (default 1.0)")
CFG = typer.Option(None, "--cfg-coef", help="Guidance strength (default 3.0)")
FORMAT = typer.Option(
    None,
    "--format",
    "-f",
    help="Audio format: wav (default, or the --output extension), flac, mp3, ogg; json: print JSON",
)
JSON_OUT = typer.Option(False, "--json", help="Print the result as JSON (for scripts)")
SAMPLE_RATE = typer.Option(None, "--sample-rate", help="Hz (default 44100) or 'native'")
BIT_DEPTH = typer.Option(None, "--bit-depth", help="16 (default), 24 or 32 (float)")
NORMALIZE = typer.Option(None, "--normalize", help="loudness (default, -14 LUFS), peak or none")
OUTPUT = typer.Option(None, "--output", "-o", help="Where to write the audio (default ./<type>-<job>.<fmt>)")
NO_PROGRESS = typer.Option(False, "--no-progress", help="No progress bar")
STREAM = typer.Option(
    False, "--stream", help="Write the audio as it is made (-o - : to stdout); formats wav, pcm, mp3, ogg (Opus)"
)
PLAY = typer.Option(False, "--play", help="With --stream: play it as it arrives (ffplay, or aplay for wav/pcm)")
WATERMARK = typer.Option(False, "--watermark", help="Embed AudioSeal's watermark (check it: `watermark detect`)")
DECODER = typer.Option(
    None, "--decoder", help="encodec (default) or mbd: Multi-Band Diffusion (fewer artefacts, far slower; no --stream)"
)
MBD_STEPS = typer.Option(None, "--mbd-steps", help="With --decoder mbd: denoising steps per band (service default 20)")


def run(
    ctx: typer.Context,
    kind: str,
    server: str | None,
    output: Path | None,
    json_out: bool,
    no_progress: bool,
    stream: bool = False,
    play: bool = False,
    input_value: str | None = None,
    **fields,
) -> None:
    st = state(ctx)
    if play and not stream:
        raise CliError("--play plays a stream", "add --stream")
    to_stdout = stream and output == streaming.STDOUT
    output = output if to_stdout else generation.check_output(output)
    fields["fmt"], out_format = generation.split_format(fields.get("fmt"), output, json_out, stream)
    formats = generation.STREAM_FORMATS if stream else generation.FORMATS
    body = generation.build_request(**fields, formats=formats)
    input_file = generation.resolve_input(input_value, st.settings().data_dir, "the input audio")
    with st.client(server) as client:
        if stream:
            outcome = streaming.stream_generation(
                client, kind, body, output, input_file=input_file, play=play, progress=not no_progress
            )
            if to_stdout:  # stdout holds the audio: the summary goes to stderr
                ui.err.print(f"{kind} job {outcome.job_id}: {ui.human_bytes(outcome.size_bytes)} streamed")
                return
        else:
            outcome = generation.generate_here(client, kind, body, output, not no_progress, input_file=input_file)
    generation.print_outcome(outcome, out_format)


@app.command("music")
def music(
    ctx: typer.Context,
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to generate (1-2000 characters)"),
    duration: float | None = DURATION,
    model: str | None = MODEL,
    seed: int | None = SEED,
    top_k: int | None = TOP_K,
    top_p: float | None = TOP_P,
    temperature: float | None = TEMPERATURE,
    cfg_coef: float | None = CFG,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    output: Path | None = OUTPUT,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
    stream: bool = STREAM,
    play: bool = PLAY,
    watermark: bool = WATERMARK,
    decoder: str | None = DECODER,
    mbd_steps: int | None = MBD_STEPS,
) -> None:
    """Text to music (MusicGen)."""
    run(ctx, "music", server, output, json_out, no_progress, stream, play, prompt=prompt, duration=duration,
        model=model, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature, cfg_coef=cfg_coef,
        fmt=audio_format, sample_rate=sample_rate, bit_depth=bit_depth, normalize=normalize,
        watermark=watermark or None, decoder=decoder, mbd_steps=mbd_steps)  # fmt: skip


@app.command("sound")
def sound(
    ctx: typer.Context,
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to generate (1-2000 characters)"),
    duration: float | None = DURATION,
    model: str | None = MODEL,
    seed: int | None = SEED,
    top_k: int | None = TOP_K,
    top_p: float | None = TOP_P,
    temperature: float | None = TEMPERATURE,
    cfg_coef: float | None = CFG,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    output: Path | None = OUTPUT,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
    stream: bool = STREAM,
    play: bool = PLAY,
    watermark: bool = WATERMARK,
) -> None:
    """Text to sound effect (AudioGen)."""
    run(ctx, "sound", server, output, json_out, no_progress, stream, play, prompt=prompt, duration=duration,
        model=model, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature, cfg_coef=cfg_coef,
        fmt=audio_format, sample_rate=sample_rate, bit_depth=bit_depth, normalize=normalize,
        watermark=watermark or None)  # fmt: skip


@app.command("melody")
def melody(
    ctx: typer.Context,
    melody_in: str = typer.Option(..., "--melody", help="The melody: an audio file or an audio content name"),
    melody_start: float | None = typer.Option(None, "--melody-start", help="Seconds into the melody where it starts"),
    melody_end: float | None = typer.Option(None, "--melody-end", help="Seconds into the melody where it ends"),
    stems: bool | None = typer.Option(
        None, "--stems/--no-stems",
        help="Chroma of the melody's vocals + other stems (htdemucs), as AudioCraft; default: if installed",
    ),  # fmt: skip
    prompt: str | None = PROMPT,
    duration: float | None = DURATION,
    model: str | None = MODEL,
    seed: int | None = SEED,
    top_k: int | None = TOP_K,
    top_p: float | None = TOP_P,
    temperature: float | None = TEMPERATURE,
    cfg_coef: float | None = CFG,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    output: Path | None = OUTPUT,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
    stream: bool = STREAM,
    play: bool = PLAY,
    watermark: bool = WATERMARK,
    decoder: str | None = DECODER,
    mbd_steps: int | None = MBD_STEPS,
) -> None:
    """Music guided by a melody (MusicGen-melody), with an optional text prompt."""
    run(ctx, "melody", server, output, json_out, no_progress, stream, play, input_value=melody_in, prompt=prompt,
        duration=duration, model=model, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature,
        cfg_coef=cfg_coef, fmt=audio_format, sample_rate=sample_rate, bit_depth=bit_depth,
        normalize=normalize, melody_start=melody_start, melody_end=melody_end, melody_stems=stems,
        watermark=watermark or None, decoder=decoder, mbd_steps=mbd_steps)  # fmt: skip


@app.command("style")
def style(
    ctx: typer.Context,
    style_in: str = typer.Option(..., "--style", help="The style audio: a file or an audio content name"),
    excerpt_length: float | None = typer.Option(
        None, "--excerpt-length", help="Seconds of the style audio the model listens to, 1.5-4.5 (default 3)"
    ),
    eval_q: int | None = typer.Option(
        None, "--eval-q", help="Codebooks of the style bottleneck, 1-6 (fewer: looser style; default 3)"
    ),
    cfg_coef_beta: float | None = typer.Option(
        None, "--cfg-coef-beta", help="Double guidance: push the text over the style (AudioCraft suggests 5)"
    ),
    prompt: str | None = PROMPT,
    duration: float | None = DURATION,
    model: str | None = MODEL,
    seed: int | None = SEED,
    top_k: int | None = TOP_K,
    top_p: float | None = TOP_P,
    temperature: float | None = TEMPERATURE,
    cfg_coef: float | None = CFG,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    output: Path | None = OUTPUT,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
    stream: bool = STREAM,
    play: bool = PLAY,
    watermark: bool = WATERMARK,
    decoder: str | None = DECODER,
    mbd_steps: int | None = MBD_STEPS,
) -> None:
    """Music in the style of an audio excerpt (MusicGen-Style), with an optional text prompt."""
    run(ctx, "style", server, output, json_out, no_progress, stream, play, input_value=style_in, prompt=prompt,
        duration=duration, model=model, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature,
        cfg_coef=cfg_coef, fmt=audio_format, sample_rate=sample_rate, bit_depth=bit_depth,
        normalize=normalize, excerpt_length=excerpt_length, eval_q=eval_q, cfg_coef_beta=cfg_coef_beta,
        watermark=watermark or None, decoder=decoder, mbd_steps=mbd_steps)  # fmt: skip


@app.command("continue")
def continue_(
    ctx: typer.Context,
    audio_in: str = typer.Option(..., "--audio", help="The audio prompt: a file or an audio content name"),
    include_prompt: bool | None = typer.Option(
        None,
        "--include-prompt/--no-include-prompt",
        help="Whether the file starts with the prompt (service default: it does); --duration is the new audio",
    ),
    prompt: str | None = PROMPT,
    duration: float | None = DURATION,
    model: str | None = MODEL,
    seed: int | None = SEED,
    top_k: int | None = TOP_K,
    top_p: float | None = TOP_P,
    temperature: float | None = TEMPERATURE,
    cfg_coef: float | None = CFG,
    audio_format: str | None = FORMAT,
    sample_rate: str | None = SAMPLE_RATE,
    bit_depth: int | None = BIT_DEPTH,
    normalize: str | None = NORMALIZE,
    output: Path | None = OUTPUT,
    server: str | None = SERVER,
    json_out: bool = JSON_OUT,
    no_progress: bool = NO_PROGRESS,
    stream: bool = STREAM,
    play: bool = PLAY,
    watermark: bool = WATERMARK,
    decoder: str | None = DECODER,
    mbd_steps: int | None = MBD_STEPS,
) -> None:
    """Continue an audio prompt, optionally steered by text."""
    run(ctx, "continuation", server, output, json_out, no_progress, stream, play, input_value=audio_in, prompt=prompt,
        duration=duration, model=model, seed=seed, top_k=top_k, top_p=top_p, temperature=temperature,
        cfg_coef=cfg_coef, fmt=audio_format, sample_rate=sample_rate, bit_depth=bit_depth,
        normalize=normalize, include_prompt=include_prompt, watermark=watermark or None,
        decoder=decoder, mbd_steps=mbd_steps)  # fmt: skip
