"""The decode lane's runner for MAGNeT models: one MagnetBatch per model, which jobs join at any
iteration boundary and leave when their last codebook is decoded (or when cancelled). Membership,
the model's lease, interruption and failure are BatchRunner's; what differs is the batch type, the
request it gets and the answer. It brings the engine (torch): only the composition root imports it."""

from __future__ import annotations

from lib.catalogue import get_spec
from lib.errors import ServiceError
from server.engine.decode import codes_to_audio
from server.engine.magnet import MagnetBatch, MagnetParams, MagnetRequest, frames_for
from server.engine.text_to_audio import Waveform
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.lane import failure
from server.jobs.lanes.batch import BatchRunner
from server.models.registry import ModelRegistry


def magnet_request(job: Job, lm) -> MagnetRequest:
    """A job's request (its MAGNeT defaults filled in by server/serving/magnet.py) for the engine.
    temperature 0 is greedy: argmax tokens, the spans scored at audiocraft's floor temperature."""
    req = job.request
    params = MagnetParams(
        use_sampling=req.temperature > 0,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        max_cfg_coef=req.max_cfg_coef,
        min_cfg_coef=req.min_cfg_coef,
        decoding_steps=tuple(req.decoding_steps),
        span_arrangement=req.span_arrangement,
    )
    n_frames = frames_for(lm, req.duration, params.span_arrangement)
    return MagnetRequest(prompt=req.prompt or "", n_frames=n_frames, seed=job.seed, params=params)


class MagnetRunner(BatchRunner):
    """The running MAGNeT batch of one (kind, model); its members are (job, None): no windows."""

    batch_type = MagnetBatch

    def admit(self, job: Job) -> None:
        """Join the batch at the next iteration. A job that can't start fails alone."""
        try:
            if self._batch is None:
                self._open()
            self._members[self._batch.add(magnet_request(job, self._batch.lm))] = (job, None)
        except ServiceError as exc:
            job.finish("failed", exc)
        self._close_if_empty()

    def step(self) -> None:
        batch = self._batch
        assert batch is not None
        for handle in self._timed_step(batch):
            job, _ = self._members.pop(handle)
            try:  # out of the batch now: whatever happens, the job ends here
                self._answer(job, batch.lm, batch.pop(handle))
            except Exception as exc:  # the disk full as its answer is written (507)...
                job.finish("failed", failure(job, exc))
        for handle, (job, _) in list(self._members.items()):
            self._report(handle, job, *batch.progress(handle))
        self._close_if_empty()

    def _answer(self, job: Job, lm, codes) -> None:
        """The codes decoded, cut to the asked duration (MAGNeT makes whole spans, so a request for
        its whole segment comes back up to two frames shorter, as in audiocraft). A streamed job gets
        its audio in one piece: no frame is final before MAGNeT's last iteration."""
        audio = codes_to_audio(lm, codes).numpy()[:, : round(job.request.duration * lm.sample_rate)]
        if getattr(job.request, "watermark", False):
            audio = self._marker(lm.sample_rate)(audio)
        if job.feed is not None:
            job.feed.write(audio)
        self._store(job, Waveform(audio, lm.sample_rate, job.seed))


def runner_for(registry: ModelRegistry, artifacts: ArtifactStore, kind: str, model: str) -> BatchRunner:
    """The decode lane's runner for a (kind, model): MAGNeT's iterative batch, or the autoregressive one."""
    cls = MagnetRunner if get_spec(model).kind == "magnet" else BatchRunner
    return cls(registry, artifacts, kind, model)
