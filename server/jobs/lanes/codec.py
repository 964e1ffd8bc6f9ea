"""The codec lane: EnCodec encode and decode jobs (POST /api/encode, POST /api/decode).

The upload is kept with the job (artifacts UPLOAD) until it ends, so a job that a restart cut off
runs again; the answer is the job's artifact like any generation's. A job holds a lease on its model
for as long as it runs, so the memory budget never unloads a codec under it. The lane runs
`workers` jobs at once (the model's own threads use the cores), and each job's torch work runs in a
thread that ends with it (server/engine/threads.in_own_thread says why).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lib.errors import ServiceError
from lib.files import DATA_DIR, copy_atomic, space_errors
from lib.schemas import EncodeJob, JobResult, codec_info
from lib.settings import Settings
from server.engine import threads
from server.engine.codec.codec import Codec
from server.engine.codec.service import DecodedFile, EncodedFile, decode_file, encode_file, open_ecdc
from server.jobs.artifacts import UPLOAD, ArtifactStore, answer_name
from server.jobs.job import Job
from server.jobs.kinds import CODEC
from server.jobs.lane import WorkerLane
from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft.jobs")


class _Stopped(Exception):
    """Raised from the progress callback: the job was cancelled, or the server's stop deadline passed."""


class CodecLane(WorkerLane):
    name = "codec"
    loads_models = True
    kinds = CODEC

    def __init__(self, registry: ModelRegistry, artifacts: ArtifactStore, settings: Settings, workers: int = 1):
        super().__init__(workers)
        self.registry = registry
        self.artifacts = artifacts
        self.settings = settings

    def run(self, job: Job) -> None:
        try:
            answer = threads.in_own_thread(self._work_on, job)
        except _Stopped:
            if job.cancel_requested.is_set():
                job.finish("cancelled")
            else:
                log.warning("%s job %s interrupted by shutdown; it runs again at the next start", job.kind, job.id)
                return
        except ServiceError as exc:  # a bad file, an unknown bandwidth, a model that does not load
            job.finish("failed", exc)
        else:
            try:
                self._keep(job, answer)
            except ServiceError as exc:  # the data dir's disk is full
                job.finish("failed", exc)
            finally:
                answer.path.unlink(missing_ok=True)  # moved, or no longer wanted
        if job.finished:
            (self.artifacts.path(job.id, UPLOAD)).unlink(missing_ok=True)

    def _work_on(self, job: Job) -> EncodedFile | DecodedFile:
        upload = self.artifacts.path(job.id, UPLOAD)
        size = upload.stat().st_size

        def progress(done: int, total: int) -> None:
            job.progress = min(0.99, done / total) if total else 0.0
            if job.cancel_requested.is_set() or (self.queue is not None and self.queue.past_deadline()):
                raise _Stopped

        lm = self.registry.acquire(job.model)
        try:
            codec = Codec.of(lm)
            with open(upload, "rb") as f:
                if job.kind == "encode":
                    req: EncodeJob = job.request
                    return encode_file(codec, f, size, req.filename, req.bandwidth_kbps, req.format, progress)
                plan = open_ecdc(lambda _name: codec, f, size)
                return decode_file(plan, f, job.request, self.settings.max_duration_s, progress)
        finally:
            self.registry.release(lm.spec.name)

    def _keep(self, job: Job, answer: EncodedFile | DecodedFile) -> None:
        """Move the answer into the job's artifacts and describe it."""
        if isinstance(answer, EncodedFile):
            ext = ".json" if job.request.format == "json" else ".ecdc"
            info = codec_info(
                "encode",
                model=answer.codec.spec.name,
                bandwidth_kbps=f"{answer.bandwidth_kbps:g}",
                codebooks=answer.header.num_codebooks,
                sample_rate=answer.codec.layout.sample_rate,
                frame_rate=f"{answer.codec.layout.sample_rate / answer.codec.layout.hop_length:g}",
                audio_length=answer.header.audio_length,
                duration_s=f"{answer.duration_s:.6g}",
                input_bytes=answer.input_bytes,
                output_bytes=answer.output_bytes,
                ecdc_bytes=answer.ecdc_bytes,
                compression_ratio=f"{answer.compression_ratio:.2f}",
                bitrate_kbps=f"{answer.bitrate_kbps:.3f}",
                encode_time_s=f"{answer.result.seconds:.3f}",
            )
            rate, channels = answer.codec.layout.sample_rate, answer.codec.layout.channels
        else:
            ext = answer.extension
            info = codec_info(
                "decode",
                model=answer.codec.spec.name,
                sample_rate=answer.sample_rate,
                channels=answer.channels,
                audio_length=answer.frames,
                duration_s=f"{answer.duration_s:.6g}",
                codebooks=answer.header.num_codebooks,
            )
            rate, channels = answer.sample_rate, answer.channels
        size = answer.path.stat().st_size
        _move(answer.path, self.artifacts.path(job.id, answer_name(ext)))
        job.result = JobResult(
            media_type=answer.media_type,
            format=job.request.format,
            sample_rate=rate,
            channels=channels,
            duration_s=answer.duration_s,
            size_bytes=size,
            file=answer_name(ext),
            info=info,
        )
        job.finish("succeeded")


def _move(source: Path, target: Path) -> None:
    """A rename where the temporary file is on the same disk, else an atomic copy."""
    with space_errors(DATA_DIR):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except OSError:
            copy_atomic(source, target)
            source.unlink(missing_ok=True)
