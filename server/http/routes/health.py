"""GET /health and GET /metrics: cheap reads only, never waiting on model work."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib import __version__
from lib.schemas import Health, LoadedModel, QueueState, WorkersReport


async def health(request: Request) -> JSONResponse:
    svc = request.app.state.services
    queued, running = svc.scheduler.counts()
    workers = svc.scheduler.workers()
    if not svc.ready:
        status = "starting"
    elif not svc.scheduler.alive:
        status = "degraded"
    else:
        status = "ok"
    body = Health(
        status=status,
        version=__version__,
        device=svc.registry.device.type,
        uptime_s=round(time.time() - svc.started_at, 3),
        models=[
            LoadedModel(name=lm.spec.name, device=lm.device_type, dtype=lm.precision) for lm in svc.registry.loaded()
        ],
        queue=QueueState(queued=queued, running=running, capacity=svc.settings.queue_depth),
        workers=WorkersReport.of(workers) if workers is not None else None,
        cpu=_cpu(svc.cpu),
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if status != "degraded" else 503)


def _cpu(report):  # noqa: ANN001, ANN202 - CpuReport or None
    """The start-up CPU report, with the engine's kernels as they are now (they load with a model)."""
    if report is None:
        return None
    from server.engine import native  # imports torch: only where a CPU registry runs

    return report.model_copy(update={"native": native.describe()})


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
