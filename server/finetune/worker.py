"""The training process: `python -m server.finetune.worker <plan.json>`, started by the fine-tune
lane (server/jobs/lanes/finetune.py) for each run.

Why a process of its own: torch's intra-op thread count is process-wide (torch.set_num_threads in
one thread changes every other thread's count, and the decode loop sets its own each step), so a
training thread inside the server would either take every core from generation and /health or have
its budget changed under it. Here the budget (AUDIOCRAFT_FINETUNE_THREADS) is the process's own, the
server's threads keep theirs, and the OS schedules the two.

It reads its plan (what to train, where the checkpoint and the answer go), reports one JSON line per
step on stdout, checkpoints on SIGTERM (the server stopping) and exits 3, and dies with the server
(PR_SET_PDEATHSIG; and it checks its parent each step): after a kill -9 of the server, no orphan
goes on writing the checkpoint the restarted server resumes from.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

EXIT_STOPPED = 3
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the per-step parent check still holds
        pass


def _say(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(plan_path: str) -> int:
    _die_with_parent()
    plan = json.loads(Path(plan_path).read_text())
    parent = os.getppid()
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("asked", True))

    import torch

    torch.set_num_threads(int(plan["threads"]))
    from transformers import AutoTokenizer

    from lib.catalogue import get_spec
    from lib.finetune import FinetuneJob
    from server.finetune import adapters, train

    job = FinetuneJob.model_validate(plan["job"])
    folder, audiocraft = train.base_folder(get_spec(job.base_model), Path(plan["base_snapshot"]))
    model = train.load_base(folder, plan["kind"], audiocraft)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    codes, captions, chroma = train.dataset_codes(Path(plan["dataset_dir"]), plan["windows"])
    device = torch.device(plan.get("device", "cpu"))
    trainer = train.Trainer(model, tokenizer, codes, captions, job, kind=plan["kind"], device=device, chroma=chroma)

    def on_step(p: train.Progress) -> None:
        _say(
            event="step", step=p.step, total=p.total_steps, loss=p.loss, lr=p.learning_rate, s=p.seconds_per_step,
            resumed_from=trainer.resumed_from,
        )  # fmt: skip

    def should_stop() -> bool:
        return stop["asked"] or os.getppid() != parent

    checkpoint = Path(plan["checkpoint"])
    try:
        outcome = trainer.run(checkpoint, on_step, should_stop)
    except train.Stopped:
        _say(event="stopped")
        return EXIT_STOPPED
    out = Path(plan["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    facts = adapters.save(trainer, outcome, out, plan["name"], plan.get("job_id"))
    _say(event="done", facts=facts.model_dump(mode="json"), resumed_from=outcome.resumed_from)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
