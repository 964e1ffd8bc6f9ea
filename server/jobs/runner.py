"""Runs one batch of generation jobs on the engine and stores each job's audio."""

from __future__ import annotations

import logging
import math
import time

from lib.schemas import ErrorBody, JobResult
from server import metrics
from server.audio.render import render
from server.engine import text_to_audio
from server.engine.decode import Cancelled
from server.engine.errors import EngineError
from server.engine.registry import ModelRegistry
from server.jobs.job import Artifact, Job

log = logging.getLogger("audiocraft.jobs")


def _item(job: Job) -> text_to_audio.TextToAudio:
    req = job.request
    return text_to_audio.TextToAudio(
        prompt=req.prompt,
        duration_s=req.duration,
        seed=job.seed,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        cfg_coef=req.cfg_coef,
    )


class GenerationRunner:
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def __call__(self, batch: list[Job]) -> None:
        started = time.time()
        for job in batch:
            job.state, job.started_at = "running", started
        try:
            lm = self.registry.get(batch[0].model)
        except EngineError as exc:
            for job in batch:
                job.finish("failed", ErrorBody(code=exc.code, message=exc.message, hint=exc.hint))
            return

        own_steps = [math.ceil(j.request.duration * lm.frame_rate_hz) + lm.num_codebooks for j in batch]
        clock = time.perf_counter()

        def on_step(step: int, _total: int) -> None:
            per_step = (time.perf_counter() - clock) / step
            for job, steps in zip(batch, own_steps, strict=True):
                job.progress = min(0.99, step / steps)
                job.eta_s = max(0.0, (steps - step) * per_step)

        def is_cancelled(i: int) -> bool:
            return batch[i].cancel_requested.is_set()

        try:
            with metrics.GENERATION_SECONDS.labels(lm.spec.name).time():
                waves = text_to_audio.generate(lm, [_item(j) for j in batch], on_step, is_cancelled)
        except Cancelled:
            waves = [None] * len(batch)
        except EngineError as exc:
            for job in batch:
                job.finish("failed", ErrorBody(code=exc.code, message=exc.message, hint=exc.hint))
            return
        except Exception as exc:
            log.exception("generation failed on %s", lm.spec.name)
            for job in batch:
                job.finish("failed", ErrorBody(code="generation_failed", message=f"generation failed: {exc}"))
            return

        for job, wave in zip(batch, waves, strict=True):
            if wave is None:
                job.finish("cancelled")
                continue
            try:
                rendered = render(wave.audio, wave.sample_rate, job.request)
            except ValueError as exc:
                job.finish("failed", ErrorBody(code="render_failed", message=str(exc)))
                continue
            job.artifact = Artifact(rendered.data, rendered.media_type, rendered.extension)
            job.result = JobResult(
                media_type=rendered.media_type,
                format=job.request.format,
                sample_rate=rendered.sample_rate,
                channels=rendered.channels,
                duration_s=round(rendered.duration_s, 6),
                size_bytes=len(rendered.data),
            )
            job.finish("succeeded")
