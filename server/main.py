"""Run the server in the foreground: `resource-audiocraft serve` and the container both land here."""

from __future__ import annotations

from lib.settings import Settings


def serve(settings: Settings) -> None:
    import uvicorn

    from server.http.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Generation runs in worker threads; one process owns the models.
        workers=1,
        timeout_graceful_shutdown=30,
    )
