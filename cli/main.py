"""`resource-audiocraft`: the lifecycle CLI (v2.0 contract), content, and client commands.

Starts without torch: only `serve` and `models make-tiny` import the server, and only when run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cli import ui
from cli.commands import codec, content, finetune, generate, jobs, lifecycle, manage, mix, models, serve, watermark
from cli.context import state
from cli.errors import FAILURE, SKIPPED, CliError

app = typer.Typer(
    name="resource-audiocraft",
    help="A self-hosted AudioCraft audio service: lifecycle (manage, status, logs), content, generation.\n\n"
    "Run `resource-audiocraft help` for examples, every command and the default configuration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from lib import __version__

        typer.echo(f"resource-audiocraft {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    runtime: str | None = typer.Option(
        None, "--runtime", help="docker, native or auto (AUDIOCRAFT_RUNTIME); auto = docker when an engine answers"
    ),
    server_host: str | None = typer.Option(None, "--host", help="Service host (AUDIOCRAFT_HOST)"),
    port: int | None = typer.Option(None, "--port", help="Service port (AUDIOCRAFT_PORT, default 7862)"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Content, jobs, logs (AUDIOCRAFT_DATA_DIR)"
    ),
    models_dir: Path | None = typer.Option(
        None, "--models-dir", help="Hub cache with weights (AUDIOCRAFT_MODELS_DIR)"
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (AUDIOCRAFT_DEVICE)"),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version"
    ),
) -> None:
    overrides = {
        "runtime": runtime.lower() if runtime else None,
        "host": server_host,
        "port": port,
        "data_dir": data_dir,
        "models_dir": models_dir,
        "device": device,
    }
    st = state(ctx)
    st.overrides = {k: v for k, v in overrides.items() if v is not None}
    st.debug = debug
    if runtime:
        from cli.runtime import check_runtime_name

        check_runtime_name(runtime)  # fail fast on a bad value


app.command("help", help="Usage examples, available commands and the default configuration.")(
    lifecycle.help_command
)
app.command("info")(lifecycle.info_command)
app.add_typer(manage.app, name="manage")
# The platform falls back to top-level `start` when `manage start --force` fails: the same commands,
# flags and exit codes as `manage start|stop|restart`.
app.command("start", help="Alias of `manage start`: " + (manage.start.__doc__ or ""))(manage.start)
app.command("stop", help="Alias of `manage stop`: " + (manage.stop.__doc__ or ""))(manage.stop)
app.command("restart", help="Alias of `manage restart`: " + (manage.restart.__doc__ or ""))(manage.restart)
app.command("status")(lifecycle.status_command)
app.command("logs")(lifecycle.logs_command)
app.command("credentials")(lifecycle.credentials_command)
app.command("test")(lifecycle.test_command)
app.add_typer(content.app, name="content")
app.add_typer(generate.app, name="generate")
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(finetune.datasets_app, name="datasets")
app.add_typer(finetune.app, name="finetune")
app.command("serve")(serve.serve_command)
app.command("encode")(codec.encode_command)
app.command("decode")(codec.decode_command)
app.command("mix")(mix.mix_command)
app.add_typer(watermark.app, name="watermark")


# Global options that take a value / that are flags. They may also follow the subcommand
# (`status --port 9000`) unless that subcommand has an option of the same name (`serve --port`).
_GLOBAL_VALUED = ("--runtime", "--host", "--port", "--data-dir", "--models-dir", "--device")
_GLOBAL_FLAGS = ("--debug",)


def hoist_global_options(command, argv: list[str]) -> list[str]:  # noqa: ANN001 - a click Group
    """Move global options written after the subcommand to the front, where click expects them."""
    group, i, first = command, 0, None
    # Skip leading global options, then walk down the command path.
    while i < len(argv):
        tok = argv[i]
        if tok in _GLOBAL_VALUED:
            i += 2
            continue
        if tok.split("=", 1)[0] in _GLOBAL_VALUED or tok in _GLOBAL_FLAGS or tok.startswith("-"):
            i += 1
            continue
        sub = getattr(group, "commands", {}).get(tok)
        if sub is None:
            return argv
        group = sub
        first = i if first is None else first
        i += 1
        if not getattr(group, "commands", None):
            break
    else:
        return argv
    own = {opt for p in getattr(group, "params", []) for opt in (*p.opts, *p.secondary_opts)}
    head, rest, moved = argv[:i], argv[i:], []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        tok = rest[j]
        if tok == "--":
            kept.extend(rest[j:])
            break
        name = tok.split("=", 1)[0]
        if name in own:
            kept.append(tok)
        elif tok in _GLOBAL_VALUED and j + 1 < len(rest):
            moved.extend(rest[j : j + 2])
            j += 2
            continue
        elif name in _GLOBAL_VALUED and "=" in tok or tok in _GLOBAL_FLAGS:
            moved.append(tok)
        else:
            kept.append(tok)
        j += 1
    # Right before the subcommand: after any global options already in front, so the later wins.
    return head[:first] + moved + head[first:] + kept


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv


def run(argv: list[str] | None = None) -> int:
    """The console script: every error becomes one or two clear lines and a contract exit code."""
    from typer._click import exceptions as click_exc

    argv = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    argv = hoist_global_options(command, argv)
    try:
        rv = command.main(args=argv, prog_name="resource-audiocraft", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except CliError as e:
        if e.code == SKIPPED:
            ui.skipped_line(e.message, e.hint)
        else:
            ui.error_line(e.message, e.hint)
        code = e.code
    except click_exc.NoArgsIsHelpError as e:
        # A bare group (`resource-audiocraft`, `... manage`): its help, as --help would print it.
        help_text = e.ctx.get_help() if e.ctx is not None else ""
        if help_text:
            sys.stdout.write(help_text + "\n")
        code = 0
    except click_exc.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "resource-audiocraft"
        ui.error_line(e.format_message(), f"see `{where} --help`")
        code = FAILURE  # the contract keeps 2 for "skipped"
    except typer.Abort:
        ui.error_line("aborted")
        code = FAILURE
    except click_exc.ClickException as e:
        ui.error_line(e.format_message())
        code = FAILURE
    except KeyboardInterrupt:
        ui.error_line("interrupted")
        code = 130
    except BrokenPipeError:
        code = FAILURE
    except Exception as e:
        from lib.content import ContentError, ContentExists, ContentNotFound, NotExecutable

        if isinstance(e, ContentExists | ContentNotFound | NotExecutable):
            ui.skipped_line(e.message, e.hint)
            code = SKIPPED
        elif isinstance(e, ContentError):
            ui.error_line(e.message, e.hint)
            code = FAILURE
        else:
            if _debug_requested(argv):
                raise
            first = (str(e).splitlines() or [""])[0][:300]
            ui.error_line(
                f"unexpected {e.__class__.__name__}: {first}",
                "rerun with --debug for the traceback, and report it",
            )
            code = FAILURE
    return code


def main_entry() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main_entry()
