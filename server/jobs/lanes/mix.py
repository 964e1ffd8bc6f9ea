"""The mix lane: POST /api/mix jobs (kind "mix").

Serving has read, checked and kept every track with the job (artifacts track-<i>.wav: trimmed, float32
at the track's own rate) and resolved the mix's length, rate and channels into the stored request, so
a job runs the same wherever and whenever it runs: after a restart, or on any worker of a Redis queue.
The lane reads one track at a time into the mix (server/audio/mix.py), then keeps the answer as a
generation's (the master and the rendered file). Torch-free: numpy, soxr, pyloudnorm.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

from lib.errors import Invalid
from lib.files import reason
from lib.schemas import MixRequest
from server.audio.decode import read_audio
from server.audio.mix import Duck, Track, mix
from server.jobs.artifacts import ArtifactStore, track_name
from server.jobs.job import Job
from server.jobs.kinds import MIX
from server.jobs.lane import WorkerLane
from server.jobs.lanes.answer import keep_audio

log = logging.getLogger("audiocraft.jobs")

# How a track plays: the fields a MixTrack and the mixer's Track share (its source is in the artifacts).
_PLAYING = {f.name for f in dataclasses.fields(Track)} - {"audio", "sample_rate"}


class _Stopped(Exception):
    """Between two tracks: the job was cancelled, or the server's stop deadline passed."""


class MixLane(WorkerLane):
    name = "mix"
    kinds = MIX

    def __init__(self, artifacts: ArtifactStore, workers: int = 1):
        super().__init__(workers)
        self.artifacts = artifacts

    def run(self, job: Job) -> None:
        req: MixRequest = job.request
        rate = int(req.sample_rate)  # serving resolved 'native', the duration and the channels
        duck = req.ducking
        try:
            audio = mix(
                self._tracks(job),
                rate,
                int(req.channels or 1),
                round(float(req.duration_s or 0.0) * rate),
                Duck(duck.db, duck.attack_s, duck.release_s, duck.threshold_db) if duck else None,
            )
        except _Stopped:
            if job.cancel_requested.is_set():
                job.finish("cancelled")
                self._forget_tracks(job)
            else:
                log.warning("mix job %s interrupted by shutdown; it runs again at the next start", job.id)
            return
        except (OSError, ValueError) as exc:  # a kept track is gone or unreadable
            job.finish("failed", Invalid(f"the mix's kept tracks: {reason(exc)}", code="invalid_input"))
            return
        keep_audio(self.artifacts, job, audio, rate)
        self._forget_tracks(job)  # the master holds the mix now

    def _tracks(self, job: Job) -> Iterator[Track]:
        req: MixRequest = job.request
        for index, t in enumerate(req.tracks):
            if job.cancel_requested.is_set() or (self.queue is not None and self.queue.past_deadline()):
                raise _Stopped
            audio, rate = read_audio(self.artifacts.read(job.id, track_name(index)))
            yield Track(audio=audio, sample_rate=rate, **t.model_dump(include=_PLAYING))
            job.progress = 0.9 * (index + 1) / len(req.tracks)

    def _forget_tracks(self, job: Job) -> None:
        for index in range(len(job.request.tracks)):
            self.artifacts.path(job.id, track_name(index)).unlink(missing_ok=True)
