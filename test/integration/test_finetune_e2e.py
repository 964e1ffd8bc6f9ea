"""A fine-tune run survives kill -9 of the real server: the restarted server resumes the job from its
last checkpoint and ends with exactly the adapter an uninterrupted run with the same seed ends with.

Exactly, not within a tolerance: every random draw of step s comes from a generator seeded with
(seed, s) (server/finetune/train.py), the optimizer's state is in the checkpoint, and both runs
train in a process of their own at the same thread count (AUDIOCRAFT_FINETUNE_THREADS=1), so the
resumed run performs the same float operations in the same order as the uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from server_process import ServerProcess
from test_finetune_api import wav
from waiting import wait_job

from server.tiny.write import write_tiny_models

STEPS, EVERY = 12, 3
FINETUNE = {
    "base_model": "musicgen-small",
    "dataset": "set",
    "name": "resumed",
    "steps": STEPS,
    "checkpoint_every": EVERY,
    "batch_size": 2,
    "rank": 4,
    "seed": 7,
}


def _server(tmp_path, which: str) -> ServerProcess:
    hub = tmp_path / which / "hub"
    if not hub.exists():
        write_tiny_models(hub, names=["musicgen-small"])
    return ServerProcess(hub, tmp_path / which / "data", finetune_threads=1, auto_download="false")


def _dataset(c) -> None:  # noqa: ANN001
    files = [("a.wav", wav(2.0, 220)), ("a.txt", b"low"), ("b.wav", wav(2.0, 440)), ("b.txt", b"high")]
    r = c.post("/api/datasets", data={"name": "set"}, files=[("files", f) for f in files])
    assert r.status_code == 201, r.text


def _adapter(tmp_path, which: str) -> dict[str, torch.Tensor]:
    repo = tmp_path / which / "hub" / "models--finetuned--musicgen-small.resumed"
    [path] = repo.glob("snapshots/*/adapter_model.safetensors")
    return load_file(str(path))


@pytest.mark.timeout(3600)
def test_resume_after_kill_reaches_the_uninterrupted_weights(tmp_path):
    # The uninterrupted run.
    server = _server(tmp_path, "straight").start()
    try:
        with server.client() as c:
            _dataset(c)
            job = c.post("/api/finetune", json=FINETUNE).json()["job"]
            assert wait_job(c, job["id"])["state"] == "succeeded"
    finally:
        server.terminate()

    # The same run, killed with SIGKILL past its first checkpoint, then restarted.
    server = _server(tmp_path, "killed").start()
    checkpoint = tmp_path / "killed" / "data" / "finetune"
    try:
        with server.client() as c:
            _dataset(c)
            job_id = c.post("/api/finetune", json=FINETUNE).json()["job"]["id"]

            def past_a_checkpoint(jobs: list[dict]) -> bool:
                return (jobs[0].get("training") or {}).get("step", 0) > EVERY

            seen = wait_job(c, job_id, until=past_a_checkpoint)
            assert seen["training"]["step"] < STEPS, "the run ended before it could be killed: raise STEPS"
            assert c.get("/health").status_code == 200  # the training runs beside a responsive server
    finally:
        server.kill()
    assert list(checkpoint.glob(f"{job_id}/checkpoint.pt"))
    server = _server(tmp_path, "killed").start()
    try:
        with server.client() as c:
            resumed: list[int] = []

            def note(jobs: list[dict]) -> bool:
                training = jobs[0].get("training") or {}
                if training.get("resumed_from") is not None:
                    resumed.append(training["resumed_from"])
                return jobs[0]["state"] in ("succeeded", "failed", "cancelled")

            final = wait_job(c, job_id, until=note)
            assert final["state"] == "succeeded", final
            assert resumed and resumed[0] >= EVERY and resumed[0] % EVERY == 0  # from a checkpoint, not step 0
            model = c.get("/api/models/musicgen-small+resumed").json()
            assert model["finetune"]["steps"] == STEPS
    finally:
        server.terminate()

    straight, killed = _adapter(tmp_path, "straight"), _adapter(tmp_path, "killed")
    assert straight.keys() == killed.keys() and straight
    for key in straight:
        assert torch.equal(straight[key], killed[key]), key
    assert any(bool(t.abs().sum()) for k, t in killed.items() if "lora_B" in k)  # it trained (B starts at 0)
