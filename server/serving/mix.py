"""Mix requests as jobs of the mix lane (server/jobs/lanes/mix.py).

Every track's audio (an earlier job's, a content item, base64 or a multipart upload) is read, checked
and kept with the job before the job exists (artifacts track-<i>.wav: trimmed, float32 at its own
rate), so a bad track is a 422 whose field names it (`tracks[2].job`) and never a failed job, and a
job that a restart cut off runs again from what it kept. The stored request keeps references only
(no base64), with what the tracks decide resolved: the mix's duration, sample rate and channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lib.content import ContentError
from lib.errors import Invalid, NotFound
from lib.schemas import MP3_SAMPLE_RATES, TRACK_SOURCES, MixRequest, MixTrack
from server.audio.decode import read_audio
from server.audio.encode import encode_audio
from server.audio.errors import AudioInputError
from server.audio.mix import trim
from server.jobs.artifacts import track_name
from server.jobs.job import PRIORITY_INTERACTIVE, Job
from server.serving.inputs import content_audio, decode_base64, job_audio

if TYPE_CHECKING:
    from server.services import Services

KIND = "mix"
MODEL = "mix"  # what a mix job shows as its model (it runs none)


@dataclass(frozen=True)
class _Kept:
    sample_rate: int
    channels: int
    length_s: float


async def submit(svc: Services, request: MixRequest, files: dict[str, UploadFile]) -> Job:
    """The request's tracks read, checked and kept; then the job, queued. Nothing stays behind when any
    of it is refused (a bad track, the queue full, the disk below its floor)."""
    svc.scheduler.check_space()
    _check_uploads(request, files)
    job = Job(kind=KIND, model=MODEL, request=request, seed=0, priority=PRIORITY_INTERACTIVE)
    try:
        kept = [await _keep(svc, job, i, track, files) for i, track in enumerate(request.tracks)]
        job.request = _resolved(svc, request, kept)
        return svc.scheduler.submit(job)
    except BaseException:
        svc.scheduler.artifacts.remove(job.id)
        raise


def _check_uploads(request: MixRequest, files: dict[str, UploadFile]) -> None:
    """Each track's `upload` names a file part that was sent, and every part sent is some track's."""
    wanted = {t.upload for t in request.tracks if t.upload is not None}
    for i, track in enumerate(request.tracks):
        if track.upload is not None and track.upload not in files:
            raise Invalid(
                f"track {i} is the upload '{track.upload}', but no file part has that name",
                field=f"tracks[{i}].upload",
                hint=f"send the file as a multipart part of that name (curl -F {track.upload}=@file.wav)",
            )
    for name in files:
        if name not in wanted:
            raise Invalid(
                f"the file part '{name}' is not the upload of any track",
                field=name,
                hint=f'name it in a track: {{"upload": "{name}", "offset_s": 0}}',
            )


async def _source(svc: Services, track: MixTrack, files: dict[str, UploadFile], field: str):
    """(bytes or file, file name) of the track's one source. An unknown job or content item is a 422
    here: the name is a field of this request, not the request's URL."""
    if track.upload is not None:
        return files[track.upload].file, files[track.upload].filename
    if track.audio_base64 is not None:
        return decode_base64(track.audio_base64, field), None
    if track.job is not None:
        try:
            return await job_audio(svc, track.job, field), None
        except NotFound:
            raise Invalid(
                f"there is no job {track.job}", code="unknown_job", field=field, hint="GET /api/jobs lists the jobs"
            ) from None
    try:
        return await content_audio(svc, track.content or "")
    except ContentError as exc:
        raise Invalid(exc.message, code=exc.code, field=field, hint=exc.hint) from None


async def _keep(svc: Services, job: Job, i: int, track: MixTrack, files: dict[str, UploadFile]) -> _Kept:
    source = track.source()
    if source is None:
        raise Invalid(
            f"track {i} has no audio",
            field=f"tracks[{i}]",
            hint=f"give it one of {', '.join(TRACK_SOURCES)} (upload: the name of a multipart file part)",
        )
    field = f"tracks[{i}].{source}"
    data, filename = await _source(svc, track, files, field)
    return await run_in_threadpool(_decode_and_keep, svc, job, i, track, data, filename, field)


def _decode_and_keep(
    svc: Services, job: Job, i: int, track: MixTrack, data: bytes | BinaryIO, filename: str | None, field: str
) -> _Kept:
    try:
        audio, rate = read_audio(data, filename, max_duration_s=svc.settings.max_mix_duration_s)
    except AudioInputError as exc:
        raise AudioInputError(f"track {i}: {exc.message}", field=field) from None
    length_s = audio.shape[1] / rate
    if track.trim_start_s >= length_s:
        raise Invalid(
            f"track {i} starts {track.trim_start_s:g} s into its audio, which is only {length_s:.3f} s long",
            field=f"tracks[{i}].trim_start_s",
            hint=f"give a trim_start_s under {length_s:.3f}",
        )
    clip = trim(audio, rate, track.trim_start_s, track.trim_end_s)
    clip_s = clip.shape[1] / rate
    if clip.shape[1] == 0:
        raise Invalid(f"nothing is left of track {i} between its trims", field=f"tracks[{i}].trim_end_s")
    if track.loop and track.loop_crossfade_s > clip_s / 2:
        raise Invalid(
            f"track {i} loops with a {track.loop_crossfade_s:g} s crossfade, more than half its {clip_s:.3f} s",
            field=f"tracks[{i}].loop_crossfade_s",
            hint=f"give a loop_crossfade_s of at most {clip_s / 2:.3f}",
        )
    wav, _ = encode_audio(clip, rate, "wav", 32)
    svc.scheduler.artifacts.write(job.id, track_name(i), wav)  # 507 when the disk is full
    return _Kept(rate, int(clip.shape[0]), clip_s)


def _resolved(svc: Services, request: MixRequest, kept: list[_Kept]) -> MixRequest:
    """The request as the lane runs it: duration, rate and channels decided, no base64 kept."""
    limit = svc.settings.max_mix_duration_s
    duration = request.duration_s
    if duration is None:
        duration = max(t.offset_s + k.length_s for t, k in zip(request.tracks, kept, strict=True))
        if duration > limit:
            raise Invalid(
                f"the tracks end at {duration:.3f} s; this server mixes at most {limit:g} s",
                field="duration_s",
                hint=f"give a duration_s of at most {limit:g}, or move or trim the tracks",
            )
    for i, track in enumerate(request.tracks):
        if track.offset_s >= duration:
            raise Invalid(
                f"track {i} starts at {track.offset_s:g} s, after the mix's end ({duration:g} s)",
                field=f"tracks[{i}].offset_s",
                hint="give an offset_s inside the mix, or a longer duration_s",
            )
    sample_rate = request.sample_rate
    if sample_rate == "native":
        sample_rate = max(k.sample_rate for k in kept)
        if request.format == "mp3" and sample_rate not in MP3_SAMPLE_RATES:
            raise Invalid(
                f"the tracks' highest rate is {sample_rate} Hz, which mp3 cannot hold",
                field="sample_rate",
                hint="give a sample_rate mp3 supports (44100, 48000, ...), or format wav, flac or ogg",
            )
    channels = request.channels
    if channels is None:
        channels = 2 if any(k.channels > 1 or t.pan != 0 for t, k in zip(request.tracks, kept, strict=True)) else 1
    tracks = [t.model_copy(update={"audio_base64": None}) for t in request.tracks]
    return request.model_copy(
        update={"tracks": tracks, "duration_s": duration, "sample_rate": sample_rate, "channels": channels}
    )
