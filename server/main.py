"""Run the server in the foreground: `resource-audiocraft serve`, `python -m server` and the container land here."""

from __future__ import annotations

import copy
import math

from lib.settings import Settings


def log_config(settings: Settings) -> dict:
    """uvicorn's logging, with timestamps (`logs --since` reads them) and the service's own
    loggers (audiocraft.*) on the same stream at the configured level."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("default", "access"):
        formatter = config["formatters"][name]
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
        formatter["datefmt"] = "%Y-%m-%d %H:%M:%S"
    config["loggers"]["audiocraft"] = {
        "handlers": ["default"],
        "level": settings.log_level.upper(),
        "propagate": False,
    }
    return config


def serve(settings: Settings) -> None:
    from server.engine import threads

    threads.prepare_environment(settings.torch_threads)  # before anything imports torch
    import uvicorn

    from server.http.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings),
        # Generation runs in a worker thread; one process owns the models.
        workers=1,
        timeout_graceful_shutdown=max(1, math.ceil(settings.stop_timeout_s)),
    )
