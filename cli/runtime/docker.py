"""The docker runtime: not built yet (the next issue). It will implement cli.runtime.base.Runtime
with the Docker SDK: the server image, port 7862, volumes for models and data, GPUs when present."""

from __future__ import annotations

from cli.errors import CliError
from lib.settings import Settings


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers (for `--runtime auto` once the docker runtime exists)."""
    try:
        import docker  # light: the SDK, no daemon contact until ping

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def make_runtime(settings: Settings):  # noqa: ANN201 - returns a Runtime once implemented
    raise CliError(
        "the docker runtime is not yet available",
        "use --runtime native (or AUDIOCRAFT_RUNTIME=native); auto picks native for now",
    )
