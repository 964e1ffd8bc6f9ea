"""The composition root: settings -> model registry -> lanes -> job queue -> services -> the app.
`resource-audiocraft serve`, `python -m server` and the container land here. The only module that
brings the engine and the HTTP layer together. The role (settings.role) decides what is built:
`all` (the default: the API and the lanes in one process), `api` (HTTP only, no model, no torch) or
`worker` (the lanes, with /health and /metrics); api and worker share a Redis queue."""

from __future__ import annotations

import copy
import math
import sys
from typing import TYPE_CHECKING

from lib.settings import UNSAFE_BIND_HINT, Settings
from server.services import Services

if TYPE_CHECKING:
    from server.jobs.queue import JobQueue


def build_services(settings: Settings) -> Services:
    """Everything the process serves with, for its role (settings.role): `all` and `worker` run the
    lanes and import the engine (torch); `api` holds no model and imports no torch."""
    from lib.catalogue import set_finder
    from lib.files import private_dir
    from server.hub import finetuned
    from server.jobs.artifacts import ArtifactStore

    private_dir(settings.data_dir)  # 0700: the job store holds every prompt
    artifacts = ArtifactStore.of(settings)
    finetuned.refresh(settings.hub_cache)  # fine-tuned models are catalogue models
    set_finder(lambda: finetuned.refresh(settings.hub_cache))
    if settings.role == "api":
        from server.jobs.kinds import LANES
        from server.models.elsewhere import ModelsElsewhere

        queue = build_queue(settings, [], artifacts, kinds=LANES)
        registry = ModelsElsewhere(settings, queue.workers)
        return Services(settings=settings, registry=registry, scheduler=queue, runs_models=False)

    from server.jobs.lanes.codec import CodecLane
    from server.jobs.lanes.dataset import DatasetLane
    from server.jobs.lanes.decode import DecodeLane
    from server.jobs.lanes.download import DownloadLane
    from server.jobs.lanes.finetune import FinetuneLane
    from server.jobs.lanes.magnet import runner_for
    from server.jobs.lanes.mix import MixLane
    from server.jobs.lanes.watermark import WatermarkLane
    from server.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    lanes = [
        DecodeLane(lambda kind, model: runner_for(registry, artifacts, kind, model), settings.max_batch),
        CodecLane(registry, artifacts, settings),
        DownloadLane(settings),
        MixLane(artifacts),
        DatasetLane(registry, artifacts, settings),
        FinetuneLane(settings),
        WatermarkLane(registry, artifacts),
    ]
    cpu_report = None
    if registry.device.type == "cpu":
        from lib.schemas import CpuReport
        from server.engine import cpu

        cpu_report = CpuReport(**cpu.report())
    queue = build_queue(settings, lanes, artifacts, registry)
    return Services(settings=settings, registry=registry, scheduler=queue, cpu=cpu_report)


def build_queue(settings: Settings, lanes: list, artifacts, registry=None, kinds=None) -> JobQueue:
    """The job queue: SQLite under the data dir (the default: one process, nothing else to run), or
    Redis at settings.queue_url, shared by API nodes and workers. A worker's queue tells the others
    what `registry` holds (its heartbeat) and places jobs by it."""
    retention_s = settings.job_retention_h * 3600
    min_free_bytes = int(settings.min_free_disk_mb * 1e6)
    if not settings.queue_url:
        from server.jobs.scheduler import Scheduler
        from server.jobs.store import JobStore

        store = JobStore(settings.data_dir / "jobs.sqlite3")
        return Scheduler(
            lanes,
            store=store,
            artifacts=artifacts,
            queue_depth=settings.queue_depth,
            retention_s=retention_s,
            min_free_bytes=min_free_bytes,
        )
    from lib.catalogue import get_spec
    from server.jobs.cluster.queue import RedisScheduler
    from server.jobs.cluster.store import RedisJobStore, connect
    from server.jobs.cluster.workers import LocalModels

    models = None
    if registry is not None:
        models = LocalModels(
            device=str(registry.device),
            loaded=lambda: [lm.spec.name for lm in registry.loaded()],
            installed=registry.installed,
            is_installed=lambda name: registry.is_loaded(name) or registry.is_installed(get_spec(name)),
        )

    return RedisScheduler(
        lanes,
        RedisJobStore(connect(settings.queue_url)),
        artifacts,
        settings.queue_depth,
        retention_s,
        kinds=kinds,
        min_free_bytes=min_free_bytes,
        visibility_s=settings.queue_visibility_s,
        consumer=settings.worker_id or None,
        widths={"decode": settings.max_batch},
        models=models,
    )


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
    """Serve until stopped. Refuses (exit 2, one line on stderr) to serve beyond loopback without a key."""
    problem = settings.unsafe_bind()
    if problem is not None:  # one line: a runtime shows the last line of a server that exits at once
        print(f"{problem}; {UNSAFE_BIND_HINT}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    from server.engine import threads

    threads.prepare_environment(settings.torch_threads)  # before anything imports torch
    import uvicorn

    from server.http.app import create_app, create_worker_app
    from server.http.protocol import timed_protocol

    services = build_services(settings)
    app = create_worker_app(services) if settings.role == "worker" else create_app(services)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings),
        # h11 with a header timeout, and a body timeout where the app does not read the body.
        http=timed_protocol(settings.header_timeout_s, settings.body_timeout_s),
        # Generation runs in a worker thread; one process owns the models.
        workers=1,
        timeout_graceful_shutdown=max(1, math.ceil(settings.stop_timeout_s)),
    )
