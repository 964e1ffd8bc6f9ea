"""The fine-tune lane: one training run at a time (job kind "finetune"), in a process of its own
(server/finetune/worker.py says why), under <data_dir>/finetune/<job id>/:

    plan.json          what the process trains, written once per run
    checkpoint.pt      adapter + optimizer + losses + step, every checkpoint_every steps (atomic)
    result/            the adapter and finetune.json, once the run has ended

A job the server stopped (a restart, a kill -9) stays 'running' in the store and runs again at the
next start: the new process resumes from checkpoint.pt and ends with the weights an uninterrupted run
ends with. A cancel kills the process and drops the folder. The result is installed as the repo
finetuned/<name> in the hub cache (the hub's one writer), so the model is in the catalogue at once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lib.errors import Internal, Invalid, ServiceError
from lib.finetune import FinetuneJob
from lib.schemas import TrainingProgress
from lib.settings import Settings
from server.engine import threads
from server.finetune import store as datasets
from server.hub import finetuned, store
from server.jobs.job import Job
from server.jobs.kinds import FINETUNE
from server.jobs.lane import WorkerLane
from server.models.device import pick_device

log = logging.getLogger("audiocraft.finetune")

POLL_S = 0.25
STOP_GRACE_S = 30.0  # a stopping server waits this long for the process to checkpoint


def training_threads(setting: int) -> int:
    """The training process's torch threads: the setting, or the usable cores but one (at least one)."""
    return setting if setting > 0 else max(1, threads.usable_cpus() - 1)


class FinetuneLane(WorkerLane):
    name = "finetune"
    loads_models = True  # trains on job.model, the base
    kinds = FINETUNE

    def __init__(self, settings: Settings):
        super().__init__(1)
        self.settings = settings

    def workdir(self, job_id: str) -> Path:
        return Path(self.settings.data_dir) / "finetune" / job_id

    def recover(self, job: Job) -> None:
        if (self.workdir(job.id) / "checkpoint.pt").is_file():
            log.warning("fine-tune %s was interrupted; it resumes from its last checkpoint", job.id)

    def run(self, job: Job) -> None:
        try:
            self._run(job)
        except ServiceError as exc:
            job.finish("failed", exc)
        if job.finished:
            shutil.rmtree(self.workdir(job.id), ignore_errors=True)

    def _plan(self, job: Job, work: Path) -> Path:
        request: FinetuneJob = job.request
        base = job.request.base_model
        from lib.catalogue import get_spec

        spec = get_spec(base)
        snapshot = store.snapshot_dir(spec, self.settings.hub_cache)
        if snapshot is None:
            raise store.ModelNotInstalled(spec)
        device = pick_device(self.settings.device)
        plan = {
            "job_id": job.id,
            "job": request.model_dump(mode="json", by_alias=True),
            "name": request.name,
            "kind": spec.kind,
            "base_snapshot": str(snapshot),
            "dataset_dir": str(datasets.folder(self.settings.data_dir, request.dataset)),
            "windows": datasets.windows(self.settings.data_dir, request.dataset),
            "checkpoint": str(work / "checkpoint.pt"),
            "out_dir": str(work / "result"),
            "threads": training_threads(self.settings.finetune_threads),
            "device": device.type,
        }
        path = work / "plan.json"
        path.write_text(json.dumps(plan))
        return path

    def _run(self, job: Job) -> None:
        work = self.workdir(job.id)
        work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(work / "result", ignore_errors=True)
        plan = self._plan(job, work)
        env = dict(os.environ, OMP_NUM_THREADS=str(json.loads(plan.read_text())["threads"]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.finetune.worker", str(plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(Path(__file__).resolve().parents[3]),
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stderr: list[str] = []
        threading.Thread(target=_pump, args=(proc.stdout, lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, lambda s: s and stderr.append(s)), daemon=True).start()
        started, done_facts = time.monotonic(), None
        while True:
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                line = ""
            if line is None:  # stdout closed: the process has ended
                break
            if line:
                done_facts = self._on_line(job, line, started) or done_facts
            if job.cancel_requested.is_set():
                proc.kill()
                proc.wait()
                job.finish("cancelled")
                return
            if self.queue is not None and self.queue.stopping:
                proc.send_signal(signal.SIGTERM)  # it checkpoints and exits: the job resumes at the next start
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.warning("fine-tune %s interrupted by shutdown; it resumes at the next start", job.id)
                return
        code = proc.wait()
        if code != 0 or done_facts is None:
            tail = "".join(stderr)[-2000:]
            log.error("fine-tune %s: the training process exited with %s:\n%s", job.id, code, tail)
            raise _failure(tail)
        finetuned.install(self.settings.hub_cache, job.request.name, work / "result")
        job.finish("succeeded")

    def _on_line(self, job: Job, line: str, started: float) -> dict | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if event.get("event") == "step":
            step, total = int(event["step"]), int(event["total"])
            job.detail = TrainingProgress(
                step=step,
                total_steps=total,
                loss=round(float(event["loss"]), 6),
                learning_rate=float(event["lr"]),
                seconds_per_step=round(float(event["s"]), 4),
                resumed_from=event.get("resumed_from"),
            )
            job.progress = min(0.99, step / total)
            first = event.get("resumed_from") or 0
            if step > first:
                job.eta_s = (time.monotonic() - started) / (step - first) * (total - step)
        elif event.get("event") == "done":
            return event["facts"]
        return None


def _pump(stream, put) -> None:  # noqa: ANN001
    for line in stream:
        put(line)
    put(None)


def _failure(tail: str) -> ServiceError:
    """What a failed run says: the error the training raised, when it is one of ours to tell."""
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    if last.startswith("ValueError: "):
        return Invalid(f"fine-tuning failed: {last.removeprefix('ValueError: ')}")
    return Internal("fine-tuning failed: the training process stopped; see the server log")
