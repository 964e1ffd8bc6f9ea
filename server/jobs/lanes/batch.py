"""The decode lane's runner: generation jobs on the engine, one continuous decode batch per model.
Jobs join it at a step boundary and leave it as soon as they finish or are cancelled; each job's
audio is stored on disk. It brings the engine (torch): only the composition root imports it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from lib.catalogue import WATERMARK_MODEL
from lib.errors import Invalid, ServiceError
from lib.files import reason
from server.engine.decode import DecodeBatch, decode_pieces
from server.engine.text_to_audio import AudioRequest, LongForm, PieceDecoder, Waveform
from server.jobs.artifacts import INPUT, ArtifactStore
from server.jobs.job import Job
from server.jobs.lane import failure
from server.jobs.lanes.answer import keep_audio
from server.models.registry import ModelRegistry

log = logging.getLogger("audiocraft.jobs")


class _SlowDecodes:
    """Multi-Band Diffusion runs for minutes on a CPU: its decoding happens on this thread, off the
    decode batch's, so the batch keeps stepping; one at a time, as its activations are large. A daemon:
    a server that stops does not wait for it, and the job, still 'running' in the store, runs again at
    the next start as an interrupted one does."""

    def __init__(self):
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audiocraft-mbd", daemon=True)
                self._thread.start()
        self._work.put(work)

    def _run(self) -> None:
        while True:
            work = self._work.get()
            try:
                work()  # it ends its job itself, whatever happens
            except Exception:  # ending it failed too (the store closed as the server stopped): keep serving
                log.exception("a Multi-Band Diffusion decode could not end its job")


_SLOW_DECODES = _SlowDecodes()

# kind -> AudioRequest's field; the mono ones take the first (only) channel
INPUT_KINDS = {"melody": "melody", "continuation": "prompt_audio", "style": "style"}
_MONO_INPUTS = ("melody", "style")


def _item(job: Job, artifacts: ArtifactStore, registry: ModelRegistry) -> AudioRequest:
    from server.audio.decode import read_audio

    req = job.request
    inputs = {}
    if job.kind in INPUT_KINDS:
        audio, rate = read_audio(artifacts.read(job.id, INPUT))
        inputs[INPUT_KINDS[job.kind]] = audio[0] if job.kind in _MONO_INPUTS else audio
        if job.kind == "melody" and getattr(req, "melody_stems", False):
            inputs["melody"] = _melody_stems(registry, audio[0], rate, job.seed)
    if job.kind == "style":
        inputs |= {
            "style_excerpt_s": req.excerpt_length,
            "style_eval_q": req.eval_q,
            "cfg_coef_beta": req.cfg_coef_beta,
        }
    return AudioRequest(
        prompt=req.prompt or "",
        duration_s=req.duration,
        seed=job.seed,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        cfg_coef=req.cfg_coef,
        include_prompt=getattr(req, "include_prompt", True),
        decoder=req.decoder,
        mbd_steps=req.mbd_steps,
        **inputs,
    )


def mbd_pieces(registry: ModelRegistry, lm, item: AudioRequest) -> PieceDecoder:
    """The timeline's pieces decoded by Multi-Band Diffusion. The MBD model is checked now (installed,
    the model's rate) and held only while a piece decodes, so an idle one can be unloaded."""
    from server.engine.mbd.decode import check_pair, decode_piece, piece_seed, spec_for

    name = spec_for(lm.spec).name
    check_pair(lm, registry.acquire(name))
    registry.release(name)
    steps = item.mbd_steps or registry.settings.mbd_steps

    def piece(codes, start: int, end: int, index: int):
        mbd = registry.acquire(name)
        try:
            return decode_piece(lm, mbd, codes, start, end, steps, piece_seed(item.seed, index))
        finally:
            registry.release(name)

    return piece


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

    batch_type = DecodeBatch  # MAGNeT's runner has its own (server/jobs/lanes/magnet.py)

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
            pieces = mbd_pieces(self.registry, lm, item) if item.decoder == "mbd" else None
            plan = LongForm(lm, item, self.registry.settings.stride_s(lm.spec.kind), pieces)
            if getattr(job.request, "watermark", False):
                plan.mark = self._marker(lm.sample_rate)
            if job.feed is not None:
                plan.stream()
            self._next_window(job, plan)
        except ServiceError as exc:  # not installed (deleted after it was queued), unsupported, load failed...
            job.finish("failed", exc)
        except (OSError, ValueError) as exc:  # the stored input audio is gone or unreadable
            job.finish("failed", Invalid(f"the job's input audio: {reason(exc)}", code="invalid_input"))
        self._close_if_empty()

    def _marker(self, sample_rate: int):
        """What watermarks a job's audio: AudioSeal with the server's message. It is loaded now, so
        that a model not installed (409) or not loading fails this job as it joins, not the batch
        later; it is leased for each use only. The marking runs in the batch's thread, as EnCodec's
        decoding does (docs/benchmarks.md has its cost)."""
        from server.engine.watermark import embed

        registry, message = self.registry, self.registry.settings.watermark_message
        registry.acquire(WATERMARK_MODEL)
        registry.release(WATERMARK_MODEL)

        def mark(audio):
            model = registry.acquire(WATERMARK_MODEL)
            try:
                return embed(model.generator, audio, sample_rate, message)
            finally:
                registry.release(WATERMARK_MODEL)

        return mark

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
        if plan.decodes_at_the_end:
            self._store_later(job, plan)
        else:
            self._store(job, plan.waveform())

    def _store_later(self, job: Job, plan: LongForm) -> None:
        """Decode and store the answer on _SLOW_DECODES, under a lease on the model (its EnCodec)."""
        self.registry.acquire(self.model)

        def work() -> None:
            try:
                self._store(job, plan.waveform())
            except Exception as exc:  # the job ends here whatever happens
                job.finish("failed", failure(job, exc))
            finally:
                self.registry.release(self.model)

        _SLOW_DECODES.submit(work)

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
            self._batch = self.batch_type(lm)
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
        self._finish_windows(self._timed_step(batch))
        for handle, (job, plan) in list(self._members.items()):
            if plan.live is not None:
                plan.stream_window(batch.final_codes(handle, plan.stream_from()))
                self._publish(job, plan)
            done, total = plan.progress(batch.progress(handle)[0] - plan.windows[plan.index].context_frames)
            self._report(handle, job, done, total)
        self._close_if_empty()

    def _timed_step(self, batch) -> list[int]:
        """One step of the batch (the handles that finished), timed into the moving average."""
        started = time.perf_counter()
        finished = batch.step()
        took = time.perf_counter() - started
        self._step_s = took if self._step_s is None else 0.9 * self._step_s + 0.1 * took
        return finished

    def _report(self, handle: int, job: Job, done: int, total: int) -> None:
        """A member's progress and ETA after a step; a member whose job was cancelled leaves now."""
        job.progress = min(0.99, done / total)
        job.eta_s = (total - done) * self._step_s
        if job.cancel_requested.is_set():
            self._batch.remove(handle)
            del self._members[handle]
            job.finish("cancelled")

    def _finish_windows(self, handles: list[int]) -> None:
        """The windows that finished on this step: their codec passes run together (requests of one
        length that finish together decode as one batch, decode.decode_pieces), then each job moves
        to its next window or stores its answer. Out of the batch now: whatever happens, each job ends
        here (fail_all no longer sees it)."""
        batch = self._batch
        ended: list[tuple[Job, LongForm]] = []
        for handle in handles:
            job, plan = self._members.pop(handle)
            try:
                plan.accept(batch.pop(handle), decode_now=False)
                ended.append((job, plan))
            except Exception as exc:  # a bad window
                job.finish("failed", failure(job, exc))
        pending = [plan.pending_pieces() for _, plan in ended]
        try:
            if self.registry.settings.codec_batch:
                audio = decode_pieces(batch.lm, [piece for pieces in pending for piece in pieces])
            else:  # each request's alone: its audio, bit for bit, whatever finished beside it
                audio = [wave for pieces in pending for wave in decode_pieces(batch.lm, pieces)]
        except Exception as exc:  # the codec failed: every job of the pass fails, none is left running
            for job, _ in ended:
                job.finish("failed", failure(job, exc))
            return
        for (job, plan), pieces in zip(ended, pending, strict=True):
            try:
                plan.add_audio(audio[: len(pieces)])
                audio = audio[len(pieces) :]
                self._next_window(job, plan)
            except Exception as exc:  # the disk full as its answer is written (507), a bad window...
                job.finish("failed", failure(job, exc))

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
        info = dict(wave.info)
        if getattr(job.request, "watermark", False):
            info |= {"watermark": WATERMARK_MODEL, "watermark_message": str(self.registry.settings.watermark_message)}
        keep_audio(self.artifacts, job, wave.audio, wave.sample_rate, info or None)
