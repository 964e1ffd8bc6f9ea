"""The decode lane's runner: generation jobs on the engine, one continuous decode batch per model.
Jobs join it at a step boundary and leave it as soon as they finish or are cancelled; each job's
audio is stored on disk. It brings the engine (torch): only the composition root imports it."""

from __future__ import annotations

import logging
import time

from lib.errors import Invalid, ServiceError
from lib.files import reason
from server.engine.decode import DecodeBatch
from server.engine.text_to_audio import AudioRequest, LongForm, Waveform
from server.jobs.artifacts import INPUT, ArtifactStore
from server.jobs.job import Job
from server.jobs.lane import failure
from server.jobs.lanes.answer import keep_audio
from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft.jobs")

INPUT_KINDS = {"melody": "melody", "continuation": "prompt_audio"}  # kind -> AudioRequest's field


def _item(job: Job, artifacts: ArtifactStore, registry: ModelRegistry) -> AudioRequest:
    from server.audio.decode import read_audio

    req = job.request
    inputs = {}
    if job.kind in INPUT_KINDS:
        audio, rate = read_audio(artifacts.read(job.id, INPUT))
        inputs[INPUT_KINDS[job.kind]] = audio[0] if job.kind == "melody" else audio
        if job.kind == "melody" and getattr(req, "melody_stems", False):
            inputs["melody"] = _melody_stems(registry, audio[0], rate, job.seed)
    return AudioRequest(
        prompt=req.prompt or "",
        duration_s=req.duration,
        seed=job.seed,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        cfg_coef=req.cfg_coef,
        include_prompt=getattr(req, "include_prompt", True),
        **inputs,
    )


def _melody_stems(registry: ModelRegistry, melody, sample_rate: int, seed: int):
    """The melody's vocals + other stems (server/engine/stems.py), as the chroma's input. It runs as
    the job joins the batch, so the batch's other jobs wait for it (seconds per 30 s of melody)."""
    from lib.catalogue import HTDEMUCS
    from server.engine.stems import melody_stems

    separator = registry.acquire(HTDEMUCS.name)
    try:
        return melody_stems(separator.model, melody, sample_rate, seed).numpy()
    finally:
        registry.release(HTDEMUCS.name)


class BatchRunner:
    """The running decode batch of one (kind, model). Used by the scheduler's worker thread only."""

    def __init__(self, registry: ModelRegistry, artifacts: ArtifactStore, kind: str, model: str):
        self.registry = registry
        self.artifacts = artifacts
        self.kind, self.model = kind, model
        self._batch: DecodeBatch | None = None
        # handle of the current window's decode request -> (job, its windows)
        self._members: dict[int, tuple[Job, LongForm]] = {}
        self._step_s: float | None = None  # moving average of one step's wall time

    def accepts(self, job: Job) -> bool:
        return job.kind == self.kind and job.model == self.model

    @property
    def jobs(self) -> list[Job]:
        return [job for job, _ in list(self._members.values())]  # a copy: other threads ask while it changes

    def __len__(self) -> int:
        return len(self._members)

    def admit(self, job: Job) -> None:
        """Join the batch at the next step. A job that can't start fails alone."""
        try:
            if self._batch is None:
                self._open()
            lm = self._batch.lm
            item = _item(job, self.artifacts, self.registry)
            plan = LongForm(lm, item, self.registry.settings.stride_s(lm.spec.kind))
            if job.feed is not None:
                plan.stream()
            self._next_window(job, plan)
        except ServiceError as exc:  # not installed (deleted after it was queued), unsupported, load failed...
            job.finish("failed", exc)
        except (OSError, ValueError) as exc:  # the stored input audio is gone or unreadable
            job.finish("failed", Invalid(f"the job's input audio: {reason(exc)}", code="invalid_input"))
        self._close_if_empty()

    def _next_window(self, job: Job, plan: LongForm) -> None:
        """Start the plan's next window in the batch, or store the answer when there is none. A
        window can finish as it joins (its prefix covers all but one step)."""
        batch = self._batch
        while not plan.done:
            handle = batch.add(plan.request())
            if handle not in batch.finished():
                self._members[handle] = (job, plan)
                return
            plan.accept(batch.pop(handle))
            self._publish(job, plan)
        self._publish(job, plan)
        self._store(job, plan.waveform())

    @staticmethod
    def _publish(job: Job, plan: LongForm) -> None:
        """A streaming job's audio decoded since the last time, to its feed."""
        if job.feed is not None:
            audio = plan.take_audio()
            if audio is not None:
                job.feed.write(audio)

    def _open(self) -> None:
        """The batch holds a lease on its model: the registry never unloads it under running jobs."""
        lm = self.registry.acquire(self.model)
        try:
            self._batch = DecodeBatch(lm)
        except BaseException:
            self.registry.release(self.model)
            raise

    def _close_if_empty(self) -> None:
        if self._batch is not None and not self._members:
            self._batch = None
            self.registry.release(self.model)

    def step(self) -> None:
        batch = self._batch
        assert batch is not None
        started = time.perf_counter()
        finished = batch.step()
        took = time.perf_counter() - started
        self._step_s = took if self._step_s is None else 0.9 * self._step_s + 0.1 * took
        for handle in finished:
            job, plan = self._members.pop(handle)
            try:  # out of the batch now: whatever happens, the job ends here (fail_all no longer sees it)
                plan.accept(batch.pop(handle))
                self._next_window(job, plan)
            except Exception as exc:  # the disk full as its answer is written (507), a bad window...
                job.finish("failed", failure(job, exc))
        for handle, (job, plan) in list(self._members.items()):
            if plan.live is not None:
                plan.stream_window(batch.final_codes(handle, plan.stream_from()))
                self._publish(job, plan)
            done, total = plan.progress(batch.progress(handle)[0] - plan.windows[plan.index].context_frames)
            job.progress = min(0.99, done / total)
            job.eta_s = (total - done) * self._step_s
            if job.cancel_requested.is_set():
                batch.remove(handle)
                del self._members[handle]
                job.finish("cancelled")
        self._close_if_empty()

    def interrupt(self) -> list[Job]:
        """Drop every member without finishing it (server stopping): the store still says
        'running', so the next start runs them again."""
        jobs = self.jobs
        for handle in list(self._members):
            self._batch.remove(handle)
        self._members.clear()
        self._close_if_empty()
        return jobs

    def fail_all(self, error: ServiceError) -> None:
        for job in self.jobs:
            job.finish("failed", error)
        self._members.clear()
        self._close_if_empty()

    def _store(self, job: Job, wave: Waveform) -> None:
        keep_audio(self.artifacts, job, wave.audio, wave.sample_rate)
