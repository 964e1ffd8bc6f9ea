"""`manage install|uninstall|start|stop|restart`, over the runtime interface."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli import ui
from cli.commands.lifecycle import probe_health
from cli.context import State, state
from cli.errors import CliError, Skipped

app = typer.Typer(help="Install, uninstall, start, stop and restart the service.", no_args_is_help=True)

VENV_OPTION = typer.Option(None, "--venv", hidden=True, help="The venv to manage (default: <repo>/.venv)")


@app.command("install")
def install(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Reinstall even when installed"),
    skip_validation: bool = typer.Option(False, "--skip-validation", help="Skip the post-install import check"),
    with_model: list[str] = typer.Option(
        [], "--with-model", help="Also download this catalogue model (repeatable)", show_default=False
    ),
    venv: Path | None = VENV_OPTION,
) -> None:
    """Install the server (the project's venv with the server extra). Exit 2 when already installed."""
    from lib.catalogue import UnknownModel, resolve_name

    try:
        with_model = [resolve_name(name) for name in with_model]
    except UnknownModel as e:
        raise CliError(e.message, "see `resource-audiocraft models list` for the names and aliases") from None
    rt = state(ctx).runtime(venv=venv)
    try:
        ui.info(f"Installing the {rt.name} runtime ...")
        rt.install(force=force, skip_validation=skip_validation)
        ui.success("installed")
    except Skipped:
        if not with_model:
            raise
        ui.info("already installed")
    for name in with_model:
        pull_model(state(ctx), name, python=getattr(rt, "python", None), runtime=rt)


def pull_model(st: State, name: str, python: Path | None = None, runtime=None) -> None:  # noqa: ANN001
    """Download a catalogue model's repos into the hub cache with huggingface_hub, in the server venv
    (with the docker runtime: in a one-off container, into the container's model cache)."""
    import subprocess
    import sys

    from lib.catalogue import get_spec

    spec = get_spec(name)
    s = st.settings()
    py = str(python) if python and Path(python).exists() else sys.executable
    repos = [spec.repo, *spec.extra_repos]
    # The engine's downloader: only the files it needs, resumable, checked (server/hub/download.py).
    code = (
        "import sys\n"
        "from lib.catalogue import get_spec\n"
        "from server.hub.download import download_model\n"
        "print('downloading', sys.argv[2], file=sys.stderr, flush=True)\n"
        "download_model(get_spec(sys.argv[2]), sys.argv[1])\n"
    )
    in_container = getattr(runtime, "run_python", None)
    where = runtime.hub_cache_description() if in_container else str(s.hub_cache)
    ui.info(f"Pulling {name} ({', '.join(repos)}, about {spec.approx_size_gb:g} GB) into {where} ...")
    if in_container:
        code_rc, last = in_container(code, [runtime.container_hub_cache, name])
    else:
        res = subprocess.run(
            [py, "-c", code, str(s.hub_cache), name], stdout=sys.stderr, stderr=subprocess.PIPE, text=True
        )
        code_rc, last = res.returncode, (res.stderr.strip().splitlines() or ["unknown error"])[-1]
    if code_rc != 0:
        raise CliError(
            f"could not download {name}: {last[:300]}",
            "check the network and HF_TOKEN; offline, `models make-tiny` writes test models",
        )
    ui.success(f"{name} is in {where}")


@app.command("uninstall")
def uninstall(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="No confirmation; kill the server if it will not stop"),
    keep_data: bool = typer.Option(False, "--keep-data", help="Keep content, jobs and logs"),
    venv: Path | None = VENV_OPTION,
) -> None:
    """Remove the venv, or with docker the container and image (and the data unless --keep-data: docker's
    volumes too). Native keeps model weights. Exit 2 when not installed."""
    st = state(ctx)
    rt = st.runtime(venv=venv)
    if not force and ui.is_interactive():
        what = "the container and the image" if rt.name == "docker" else "the venv"
        if not keep_data:
            volumes = "the volumes, " if rt.name == "docker" else ""
            what += f" and {volumes}the data in {st.settings().data_dir}"
        if not typer.confirm(f"Remove {what}?", default=False):
            raise CliError("uninstall cancelled", "pass --force to skip the question")
    removed = rt.uninstall(force=force, keep_data=keep_data)
    # Print before returning: the venv this CLI runs from may be gone now.
    ui.success("uninstalled: " + (", ".join(removed) or "nothing left"))
    rt.finish_uninstall()


def wait_healthy(st: State, rt, endpoint: str, timeout: float) -> None:  # noqa: ANN001
    """Poll /health until the service answers ok (and a container's health check does not say
    unhealthy); fail early if the process or container dies."""
    s = st.settings()
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with ui.err.status(f"waiting for {endpoint}/health ...", spinner="dots"):
        while True:
            health, why = probe_health(endpoint, s.api_key, timeout=2.0)
            if health is not None:
                if health.status == "ok":
                    # A container's own health check may not have run yet ("starting"): /health answering
                    # ok through the published port is the same check. Only its "unhealthy" holds us back.
                    if rt.health_state() != "unhealthy":
                        return
                    last = "the container's health check reports unhealthy"
                elif health.status == "degraded":
                    ui.warn("the service is up but degraded; see `resource-audiocraft status --verbose`")
                    return
                else:
                    last = f"status {health.status}"
            else:
                last = why or last
            if not rt.status().running:
                raise CliError(
                    "the server process exited while starting",
                    "see `resource-audiocraft logs --tail 50`",
                )
            if time.monotonic() >= deadline:
                raise CliError(
                    f"the service was not healthy within {timeout:g} s ({last}); it may still be starting",
                    "check `resource-audiocraft status` and `resource-audiocraft logs`, or raise --timeout",
                )
            time.sleep(0.5)


def do_start(ctx: typer.Context, wait: bool, timeout: float, venv: Path | None = None, force: bool = False) -> None:
    """Start; when it runs already: exit 2, or with `force` restart it (a graceful stop first)."""
    st = state(ctx)
    s = st.settings()
    rt = st.runtime(venv=venv)
    current = rt.status()
    if current.running:
        if not force:
            raise Skipped(f"already running ({current.describe()}) at {current.endpoint}", "--force restarts it")
        ui.info(f"already running ({current.describe()}); --force: restarting it")
        do_stop(ctx, force=False, timeout=30.0)
    health, _ = probe_health(s.endpoint, s.api_key, timeout=1.5)
    if health is not None:
        if not force:
            raise Skipped(f"already running at {s.endpoint} (not started by this CLI)")
        # Nothing this CLI can restart (no pid file, no container of ours), but the service is up.
        ui.warn(
            f"a service already answers at {s.endpoint} but this CLI did not start it, so --force cannot "
            "restart it; leaving it running"
        )
        return
    started = rt.start()
    log = started.log_file or "`resource-audiocraft logs`"
    ui.success(f"started ({rt.name}, {started.describe()}) on {started.endpoint}; log: {log}")
    if wait:
        t0 = time.monotonic()
        wait_healthy(st, rt, started.endpoint, timeout)
        ui.success(f"healthy after {time.monotonic() - t0:.1f} s")
    else:
        ui.info("[dim]`resource-audiocraft status` shows when it is ready[/dim]")


@app.command("start")
def start(
    ctx: typer.Context,
    wait: bool = typer.Option(False, "--wait", help="Wait until /health answers ok"),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds --wait waits"),
    force: bool = typer.Option(
        False, "--force", help="Start whatever the state: if it runs, restart it (exit 0, not 2)"
    ),
    venv: Path | None = VENV_OPTION,
) -> None:
    """Start the service in the background. Exit 2 when it already runs (unless --force)."""
    do_start(ctx, wait, timeout, venv, force=force)


def do_stop(ctx: typer.Context, force: bool, timeout: float) -> None:
    st = state(ctx)
    s = st.settings()
    rt = st.runtime()
    current = rt.status()
    if not current.running:
        health, _ = probe_health(s.endpoint, s.api_key, timeout=1.5)
        if health is not None:
            raise CliError(
                f"a service answers at {s.endpoint} but this CLI did not start it (no pid file)",
                "stop it where it was started",
            )
    if current.running:
        ui.info(f"stopping ({current.describe()}) ...")
    graceful = rt.stop(force=force, timeout=timeout)
    if graceful:
        ui.success("stopped")
    else:
        ui.success("stopped (killed)" if force else f"stopped (killed after {timeout:g} s without exiting)")


@app.command("stop")
def stop(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Kill at once (SIGKILL); running jobs are lost"),
    timeout: float = typer.Option(30.0, "--timeout", min=0, help="Seconds to drain running jobs before a kill"),
) -> None:
    """Stop the service: SIGTERM, drain running jobs, SIGKILL after --timeout. Exit 2 when not running."""
    state(ctx).lenient = True  # a bad setting is a warning here: the service can always be stopped
    do_stop(ctx, force, timeout)


@app.command("restart")
def restart(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Kill instead of draining"),
    wait: bool = typer.Option(False, "--wait", help="Wait until /health answers ok"),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds to wait for stop and for health"),
) -> None:
    """Stop (if running), then start."""
    try:
        do_stop(ctx, force, min(timeout, 30.0))
    except Skipped:
        ui.info("not running; starting")
    do_start(ctx, wait, timeout)
