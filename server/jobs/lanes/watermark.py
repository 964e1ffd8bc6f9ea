"""The watermark lane: detection jobs (POST /api/watermark/detect, kind "detect").

Serving has read and kept the audio with the job (artifacts INPUT, at its own rate and channels), so
a job runs the same after a restart or on any worker. The lane reads it, runs AudioSeal's detector on
each channel (server/engine/watermark.py resamples to 16 kHz) and keeps the verdict as the job's
answer, a JSON file, with its gist in the result's info. The job holds a lease on the model while it
runs; its torch work runs in a thread that ends with it (server/engine/threads.in_own_thread).
"""

from __future__ import annotations

import logging

from lib.errors import Invalid, ServiceError
from lib.files import reason
from lib.schemas import ChannelDetection, JobResult, WatermarkDetection
from server.engine import threads
from server.jobs.artifacts import INPUT, ArtifactStore, answer_name
from server.jobs.job import Job
from server.jobs.kinds import WATERMARK
from server.jobs.lane import WorkerLane
from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft.jobs")

JSON = "application/json"


class WatermarkLane(WorkerLane):
    name = "watermark"
    loads_models = True
    kinds = WATERMARK

    def __init__(self, registry: ModelRegistry, artifacts: ArtifactStore, workers: int = 1):
        super().__init__(workers)
        self.registry = registry
        self.artifacts = artifacts

    def run(self, job: Job) -> None:
        try:
            verdict = threads.in_own_thread(self._detect, job)
        except ServiceError as exc:  # the model is not installed, or does not load
            job.finish("failed", exc)
        except (OSError, ValueError) as exc:  # the kept audio is gone or unreadable
            job.finish("failed", Invalid(f"the job's audio: {reason(exc)}", code="invalid_input"))
        else:
            data = verdict.model_dump_json(indent=2).encode()
            self.artifacts.write(job.id, answer_name(".json"), data)
            job.result = JobResult(
                media_type=JSON,
                format="json",
                sample_rate=verdict.sample_rate,
                channels=len(verdict.channels),
                duration_s=verdict.duration_s,
                size_bytes=len(data),
                file=answer_name(".json"),
                info={
                    "detected": str(verdict.detected).lower(),
                    "score": f"{verdict.score:.6g}",
                    "message": "" if verdict.message is None else str(verdict.message),
                },
            )
            job.finish("succeeded")
        if job.finished:
            self.artifacts.path(job.id, INPUT).unlink(missing_ok=True)

    def _detect(self, job: Job) -> WatermarkDetection:
        from server.audio.decode import read_audio
        from server.engine.watermark import DETECTION_THRESHOLD, detect

        audio, rate = read_audio(self.artifacts.read(job.id, INPUT))
        model = self.registry.acquire(job.model)
        try:
            found = detect(model.detector, audio, rate)
        finally:
            self.registry.release(model.spec.name)
        channels = [
            ChannelDetection(
                score=round(d.score, 6),
                detected=d.detected,
                message=d.message if d.detected and d.bits else None,
                message_bits="".join(map(str, d.bits)) if d.detected and d.bits else None,
            )
            for d in found
        ]
        best = max(channels, key=lambda c: c.score)
        return WatermarkDetection(
            model=job.model,
            detected=best.detected,
            score=best.score,
            threshold=DETECTION_THRESHOLD,
            message=best.message,
            message_bits=best.message_bits,
            channels=channels,
            sample_rate=rate,
            duration_s=round(audio.shape[-1] / rate, 6),
        )
