"""`content add|list|get|remove|execute|generate`: audio assets and generation presets."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from cli import generation, ui
from cli import mix as mixing
from cli.context import State, state
from cli.errors import CliError, Skipped
from cli.options import SERVER
from lib.content import ContentItem, ContentStore

app = typer.Typer(
    help="Audio assets and generation presets kept by the service (melody inputs, results, saved requests).",
    no_args_is_help=True,
)

GENERATE_TYPES = (*generation.KINDS, "mix")


def store(ctx: typer.Context) -> ContentStore:
    return ContentStore.for_data_dir(state(ctx).settings().data_dir)


def _item_row(i: ContentItem) -> list[Any]:
    dur = f"{i.duration_s:.1f} s" if i.duration_s is not None else ""
    return [i.name, i.type, i.format, dur, ui.human_bytes(i.size_bytes), i.source, i.created_at]


@app.command("add")
def add(
    ctx: typer.Context,
    file: Path | None = typer.Option(None, "--file", help="The audio file or JSON preset to add"),
    name: str | None = typer.Option(
        None, "--name", help="Its name (default: the file name without extension)"
    ),
    type_: str | None = typer.Option(None, "--type", help="audio or preset (default: from the file)"),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
) -> None:
    """Add an audio file or a preset (a saved generation request, JSON). Exit 2 when the name exists."""
    fmt = ui.check_format(fmt)
    if file is None:
        raise CliError("content add needs --file", "e.g. content add --file melody.wav --name theme")
    if type_ is not None and type_ not in ("audio", "preset"):
        raise CliError(f"invalid --type {type_!r}", "use audio or preset")
    if not file.expanduser().is_file():
        raise CliError(f"file not found: {file}", "pass an existing file with --file")
    item = store(ctx).add_file(file.expanduser(), name=name, type=type_)
    if not ui.emit(item, fmt):
        ui.success(f"added {item.type} [bold]{escape(item.name)}[/bold] ({ui.human_bytes(item.size_bytes)})")


@app.command("list")
def list_(
    ctx: typer.Context,
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
    filter_: str | None = typer.Option(
        None, "--filter", help="Name substring or glob (e.g. 'calm*'), or a type"
    ),
    type_: str | None = typer.Option(None, "--type", help="Only audio or only preset"),
) -> None:
    """List content."""
    fmt = ui.check_format(fmt)
    if type_ is not None and type_ not in ("audio", "preset"):
        raise CliError(f"invalid --type {type_!r}", "use audio or preset")
    items = store(ctx).list(pattern=filter_, type=type_)
    if ui.emit({"items": items, "total": len(items)} if fmt == "yaml" else items, fmt):
        return
    if not items:
        ui.out.print("No content" + (" matches." if filter_ or type_ else " yet."))
        ui.out.print(
            "  add some: resource-audiocraft content add --file F, or content generate --type music ..."
        )
        return
    ui.table(
        ["name", "type", "format", "duration", "size", "source", "created"], [_item_row(i) for i in items]
    )


@app.command("get")
def get(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="The content name"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Copy the file here ('-' = stdout)"),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json or yaml"),
) -> None:
    """Show an item, or copy its file with --output. Exit 2 when not found."""
    fmt = ui.check_format(fmt)
    st = store(ctx)
    item = st.get(name)
    path = st.path_of(name)
    if output is not None:
        if str(output) == "-":
            with open(path, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
            return
        out = generation.check_output(output)
        assert out is not None
        shutil.copyfile(path, out)
        if not ui.emit({**item.model_dump(mode="json"), "output": str(out)}, fmt):
            ui.success(f"wrote {out} ({ui.human_bytes(item.size_bytes)})")
        return
    data = {**item.model_dump(mode="json"), "file": str(path)}
    if item.type == "preset":
        try:
            data["preset"] = json.loads(path.read_text())
        except ValueError:
            pass
    if ui.emit(data, fmt):
        return
    for key in ("name", "type", "format", "duration_s", "sample_rate", "channels", "size_bytes", "source",
                "created_at", "file"):  # fmt: skip
        if data.get(key) is not None:
            ui.out.print(f"{key:<12} {escape(str(data[key]))}")
    if item.metadata:
        ui.out.print(f"{'metadata':<12} {escape(json.dumps(item.metadata))}")
    if "preset" in data:
        ui.out.print(f"{'preset':<12} {escape(json.dumps(data['preset']))}")


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="The content name"),
    force: bool = typer.Option(False, "--force", help="No confirmation"),
) -> None:
    """Remove an item and its file. Exit 2 when not found."""
    st = store(ctx)
    item = st.get(name)
    if not force and ui.is_interactive():
        if not typer.confirm(f"Remove {item.type} {name!r}?", default=False):
            raise CliError("not removed", "pass --force to skip the question")
    st.remove(name)
    ui.success(f"removed {item.type} [bold]{escape(name)}[/bold]")


@app.command("execute")
def execute(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", help="The preset to run"),
    options: str | None = typer.Option(
        None, "--options", help="JSON overriding preset fields, e.g. '{\"seed\": 1}'"
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the audio here"),
    result_name: str | None = typer.Option(None, "--save-as", help="Content name of the result"),
    server: str | None = SERVER,
    fmt: str = typer.Option("text", "--format", "-f", help="text or json"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
    start: bool = typer.Option(False, "--start", help="Start the service first when it is not running"),
) -> None:
    """Run a preset (a saved generation request), keeping the result as content. Exit 2: not executable."""
    fmt = ui.check_format(fmt, ("text", "json"))
    if not name:
        raise CliError("content execute needs --name PRESET", "see `content list --type preset`")
    st = store(ctx)
    preset = st.load_preset(name)
    if options:
        try:
            extra = json.loads(options)
        except ValueError as e:
            raise CliError(
                f"--options is not valid JSON: {e}", 'e.g. --options \'{"seed": 1, "duration": 5}\''
            ) from None
        if not isinstance(extra, dict):
            raise CliError("--options must be a JSON object", "e.g. --options '{\"seed\": 1}'")
        preset = {**preset, **extra}
    kind = str(preset.pop("type"))
    if kind not in GENERATE_TYPES:
        raise Skipped(f"preset {name!r} has type {kind!r}, which cannot be executed")
    files = None
    if kind == "mix":
        tracks = mixing.from_preset(preset.pop("tracks", None), state(ctx).settings().data_dir)
        preset, files, input_value = {**preset, "tracks": tracks.tracks}, tracks.files, None
    else:
        input_value = preset.pop("input", None) or preset.pop("melody", None) or preset.pop("audio", None)
    output = generation.check_output(output)
    target = _result_name(st, result_name, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _generate_into_content(
        ctx, kind, preset, input_value, output, target, {"preset": name}, server, fmt, no_progress, start, files
    )


@app.command("generate")
def generate(
    ctx: typer.Context,
    type_: str = typer.Option("music", "--type", "-t", help="music, sound, melody, continuation or mix"),
    prompt: str | None = typer.Option(
        None, "--prompt", "-p", help="What to generate (music and sound need it)"
    ),
    duration: float | None = typer.Option(
        None, "--duration", "-d", help="Seconds (service default: 10 music, 5 sound)"
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Catalogue model name or alias, e.g. small"),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (drawn when absent)"),
    audio_format: str | None = typer.Option(
        None,
        "--format",
        "-f",
        help="wav (default, or the --output extension), flac, mp3, ogg; json: JSON result",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the audio to this file"),
    name: str | None = typer.Option(
        None, "--name", help="Content name of the result (default <type>-<time>)"
    ),
    input_value: str | None = typer.Option(
        None,
        "--input",
        "--melody",
        "--audio",
        help="melody/continuation input: an audio file or content name",
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Sampling: top k (default 250)"),
    top_p: float | None = typer.Option(None, "--top-p", help="Sampling: nucleus, 0 = off"),
    temperature: float | None = typer.Option(None, "--temperature", help="0 = greedy (default 1.0)"),
    cfg_coef: float | None = typer.Option(None, "--cfg-coef", help="Guidance strength (default 3.0)"),
    track: list[str] | None = typer.Option(None, "--track", help="mix: " + mixing.TRACK_HELP),
    duck: float | None = typer.Option(None, "--duck", help="mix: lower music tracks by this many dB under effects"),
    server: str | None = SERVER,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
    start: bool = typer.Option(False, "--start", help="Start the service first when it is not running"),
) -> None:
    """Generate audio with the running service and keep it as content (the card's own command)."""
    kind = generation.KIND_ALIASES.get(type_, type_)
    if kind not in GENERATE_TYPES:
        raise CliError(f"invalid --type {type_!r}", f"use one of: {', '.join(GENERATE_TYPES)}")
    if kind in ("music", "sound") and not prompt:
        raise CliError(f"--prompt is required for {kind}", 'e.g. --prompt "calm piano"')
    if kind in ("melody", "continuation") and not input_value:
        raise CliError(f"{kind} needs --input (an audio file or content name)", "e.g. --input theme.wav")
    if kind == "mix" and not track:
        raise CliError("a mix needs --track (repeat it)", "e.g. --track rain.wav@0:-6dB,loop --track thunder.wav@2.5")
    output = generation.check_output(output)
    fmt_value, out_format = generation.split_format(audio_format, output, json_out)
    files = None
    if kind == "mix":
        tracks = mixing.from_specs(track or [], state(ctx).settings().data_dir)
        body, files = mixing.request_body(tracks, duration, fmt_value, duck_db=duck), tracks.files
    else:
        body = generation.build_request(
            prompt, duration, model, seed, top_k, top_p, temperature, cfg_coef, fmt_value, None, None, None
        )
    st = store(ctx)
    target = _result_name(st, name, f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    _generate_into_content(
        ctx, kind, body, input_value, output, target, {}, server, out_format, no_progress, start, files
    )


def _result_name(st: ContentStore, name: str | None, default: str) -> str:
    if name is None:
        return st.unique_name(default)
    from lib.content import valid_name

    if not valid_name(name):
        raise CliError(f"invalid --name {name!r}", "use letters, digits, '.', '_' and '-'")
    if st.exists(name):
        raise Skipped(
            f"content {name!r} already exists", "choose another --name or `content remove` it first"
        )
    return name


def _ensure_service(st: State, server: str | None, start: bool) -> None:
    from cli.commands.lifecycle import probe_health

    s = st.settings()
    endpoint = server or s.endpoint
    health, why = probe_health(endpoint, s.api_key, timeout=3.0)
    if health is not None:
        return
    if not start or server is not None:
        raise CliError(
            f"the service is not reachable at {endpoint} ({why})",
            "start it with `resource-audiocraft manage start --wait`, or pass --start",
        )
    from cli.commands.manage import wait_healthy

    rt = st.runtime()
    started = rt.start()
    ui.info(f"started the service (pid {started.pid}); waiting for it ...")
    wait_healthy(st, rt, started.endpoint, 120.0)


def _generate_into_content(
    ctx: typer.Context,
    kind: str,
    body: dict[str, Any],
    input_value: str | None,
    output: Path | None,
    target: str,
    extra_meta: dict[str, Any],
    server: str | None,
    out_format: str,
    no_progress: bool,
    start: bool,
    files: dict[str, Path] | None = None,
) -> None:
    st = state(ctx)
    s = st.settings()
    input_file = generation.resolve_input(input_value, s.data_dir, "--input")
    _ensure_service(st, server, start)
    with st.client(server) as client:
        outcome = generation.generate(
            client, kind, body, output, input_file=input_file, progress=not no_progress, files=files
        )
    temp = output is None
    try:
        meta = {
            "kind": kind,
            "prompt": body.get("prompt"),
            "model": outcome.model,
            "seed": outcome.seed,
            "job": outcome.job_id,
            "generation_time_s": outcome.generation_time_s,
            **({"input": input_value} if input_value else {}),
            **extra_meta,
        }
        item = ContentStore.for_data_dir(s.data_dir).add_file(
            outcome.path, name=target, type="audio", source="generated", metadata=meta
        )
    finally:
        if temp:
            outcome.path.unlink(missing_ok=True)
    if temp:
        outcome.path = ContentStore.for_data_dir(s.data_dir).path_of(item.name)
    if item.duration_s is not None and outcome.duration_s is None:
        outcome.duration_s = item.duration_s
    generation.print_outcome(outcome, out_format, {"content": item.name})
