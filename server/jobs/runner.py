"""Runs one batch of generation jobs on the engine and stores each job's audio on disk."""

from __future__ import annotations

import logging
import math
import time

from lib.schemas import ErrorBody, JobResult, OutputOptions
from server.audio.encode import encode_audio
from server.audio.render import render
from server.engine import text_to_audio
from server.engine.decode import Cancelled
from server.engine.errors import EngineError
from server.engine.registry import ModelRegistry
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job

log = logging.getLogger("audiocraft.jobs")

MASTER = "master.wav"  # native rate, float32, not normalised: other formats are rendered from it


def answer_name(extension: str) -> str:
    return f"audio{extension}"


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


def _fail_all(batch: list[Job], error: ErrorBody) -> None:
    for job in batch:
        job.finish("failed", error)


class GenerationRunner:
    def __init__(self, registry: ModelRegistry, artifacts: ArtifactStore):
        self.registry = registry
        self.artifacts = artifacts

    def __call__(self, batch: list[Job]) -> None:
        try:
            lm = self.registry.get(batch[0].model)
        except EngineError as exc:
            _fail_all(batch, ErrorBody(code=exc.code, message=exc.message, hint=exc.hint))
            return

        own_steps = [math.ceil(j.request.duration * lm.frame_rate_hz) + lm.num_codebooks for j in batch]
        clock = time.perf_counter()

        def on_step(step: int, _total: int) -> None:
            per_step = (time.perf_counter() - clock) / step
            for job, steps in zip(batch, own_steps, strict=True):
                job.progress = min(0.99, step / steps)
                job.eta_s = max(0.0, (steps - step) * per_step)

        def is_cancelled(i: int) -> bool:
            return batch[i].cancel_requested.is_set() or batch[i].interrupted.is_set()

        try:
            waves = text_to_audio.generate(lm, [_item(j) for j in batch], on_step, is_cancelled)
        except Cancelled:
            waves = [None] * len(batch)
        except EngineError as exc:
            _fail_all(batch, ErrorBody(code=exc.code, message=exc.message, hint=exc.hint))
            return
        except Exception as exc:
            log.exception("generation failed on %s", lm.spec.name)
            _fail_all(batch, ErrorBody(code="generation_failed", message=f"generation failed: {exc}"))
            return

        for job, wave in zip(batch, waves, strict=True):
            if wave is None:
                if not job.interrupted.is_set():
                    job.finish("cancelled")
                continue  # interrupted by shutdown: left 'running' in the store, runs again at start
            self.store_audio(job, wave.audio, wave.sample_rate)

    def store_audio(self, job: Job, audio, native_rate: int) -> None:
        try:
            rendered = render(audio, native_rate, job.request)
        except ValueError as exc:
            job.finish("failed", ErrorBody(code="render_failed", message=str(exc)))
            return
        master, _ = encode_audio(audio, native_rate, "wav", 32)
        self.artifacts.write(job.id, MASTER, master)
        self.artifacts.write(job.id, answer_name(rendered.extension), rendered.data)
        job.result = JobResult(
            media_type=rendered.media_type,
            format=job.request.format,
            sample_rate=rendered.sample_rate,
            channels=rendered.channels,
            duration_s=round(rendered.duration_s, 6),
            size_bytes=len(rendered.data),
        )
        job.finish("succeeded")


def rerender(artifacts: ArtifactStore, job: Job, options: OutputOptions):
    """Another format/rate/depth of a finished job's audio, from its native-rate master."""
    from server.audio.decode import read_audio

    audio, rate = read_audio(artifacts.read(job.id, MASTER))
    return render(audio, rate, options)
