"""EnCodec requests as jobs of the codec lane: the upload is kept with the job, the answer is its artifact."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from lib.catalogue import CATALOGUE, ModelSpec, get_spec
from lib.errors import Invalid
from lib.schemas import DecodeJob, DecodeOptions, EncodeJob, EncodeOptions, default_bandwidth
from server.engine.codec import container
from server.engine.errors import UnsupportedRequest
from server.jobs.artifacts import UPLOAD
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.serving import downloads

if TYPE_CHECKING:
    from server.services import Services


def codec_spec(svc: Services, name: str) -> tuple[ModelSpec, Job | None]:
    """The codec model (404 unknown, 422 not a codec) and the download it must wait for, if any."""
    spec = get_spec(name)
    if spec.kind != "encodec":
        codecs = ", ".join(n for n, s in CATALOGUE.items() if s.kind == "encodec")
        raise UnsupportedRequest(f"{spec.name} is not a codec model", field="model", hint=f"use one of: {codecs}")
    return spec, downloads.require(svc, spec)


def _submit(svc: Services, job: Job, upload: BinaryIO) -> Job:
    """The upload kept with the job, then the job queued; neither while the disk is low (507)."""
    svc.scheduler.check_space()
    artifacts = svc.scheduler.artifacts
    upload.seek(0)
    artifacts.write_from(job.id, UPLOAD, upload)
    try:
        return svc.scheduler.submit(job)
    except BaseException:
        artifacts.remove(job.id)
        raise


def encode(svc: Services, upload: BinaryIO, filename: str | None, options: EncodeOptions) -> Job:
    spec, after = codec_spec(svc, options.model or svc.settings.default_codec_model)
    bandwidth = options.bandwidth_kbps if options.bandwidth_kbps is not None else default_bandwidth(spec.name)
    request = EncodeJob(model=spec.name, bandwidth_kbps=bandwidth, format=options.format, filename=filename)
    job = Job(kind="encode", model=spec.name, request=request, seed=0, priority=PRIORITY_INTERACTIVE)
    job.run_after(after)
    return _submit(svc, job, upload)


def _check_output_size(svc: Services, spec: ModelSpec, header: container.Header, options: DecodeOptions) -> None:
    """Refuse a decode whose answer would pass AUDIOCRAFT_MAX_DECODE_SAMPLES, from the header alone."""
    rate = spec.sample_rate if options.sample_rate == "native" else int(options.sample_rate)
    samples = round(header.audio_length * rate / spec.sample_rate) * spec.channels
    limit = svc.settings.max_decode_samples
    if samples > limit:
        seconds = header.audio_length / spec.sample_rate
        raise Invalid(
            f"this decode would write {samples:,} samples ({seconds:,.0f} s of {spec.channels}-channel audio at "
            f"{rate} Hz); the server writes at most {limit:,} per decode",
            code="decode_too_large",
            field="sample_rate" if rate > spec.sample_rate else "file",
            hint="ask for a lower sample_rate (native is the codec's own), send a shorter file, or raise "
            "AUDIOCRAFT_MAX_DECODE_SAMPLES on the server",
        )


def decode(svc: Services, upload: BinaryIO, filename: str | None, options: DecodeOptions) -> Job:
    """The .ecdc header names the model: read it (a 422 when it is not an .ecdc) before anything is
    queued, and refuse an answer past the output bound. The body is checked against the header's
    claims in the lane, with the model's layout, before anything is allocated (plan_decode)."""
    upload.seek(0)
    header, _ = container.read_header(upload)
    spec, after = codec_spec(svc, container.catalogue_name(header.model))
    _check_output_size(svc, spec, header, options)
    request = DecodeJob(**options.model_dump(), filename=filename)
    job = Job(kind="decode", model=spec.name, request=request, seed=0, priority=PRIORITY_INTERACTIVE)
    job.run_after(after)
    return _submit(svc, job, upload)
