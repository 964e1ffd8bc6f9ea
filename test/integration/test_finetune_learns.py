"""Evidence that fine-tuning learns: a tiny MusicGen trained on one repeated pattern of codes makes
that pattern when it generates greedily, and the base model does not.

The pattern: codebook k cycles through (100 + k, 600 + k, 1100 + k, 1600 + k). What is measured on
the greedy output (top_k=1, through the engine that serves generation, with the adapter merged at
load) is the share of frame-to-frame steps that follow the cycle. A random-weight base lands on it
by chance only (about 4 in 2048 per step); the fine-tuned model should follow it nearly always.

A randomly initialised tiny decoder cannot shape its output through attention alone (its frozen
codebook embeddings and heads are near zero), so this run adapts the embeddings and heads too
(`heads`, `ffn`); on real checkpoints the attention default is the recipe's.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoTokenizer

from lib.catalogue import get_spec
from lib.finetune import FinetuneJob
from lib.settings import Settings
from server.engine.decode import DecodeBatch, DecodeRequest
from server.finetune import adapters, train
from server.hub import finetuned, store
from server.models.registry import ModelRegistry
from server.tiny.write import write_tiny_models

CYCLE = (100, 600, 1100, 1600)
FRAMES = 100
NAME = "musicgen-small+pattern"
PROMPT = "the pattern"


def pattern(frames: int, phase: int = 0) -> torch.Tensor:
    return torch.tensor([[CYCLE[(t + phase) % 4] + k for t in range(frames)] for k in range(4)])


def follows(codes: torch.Tensor) -> float:
    """The share of steps t -> t+1 (over every codebook) that go to the cycle's next code."""
    good = total = 0
    for k in range(codes.shape[0]):
        nxt = {CYCLE[i] + k: CYCLE[(i + 1) % 4] + k for i in range(4)}
        for a, b in zip(codes[k, :-1].tolist(), codes[k, 1:].tolist(), strict=True):
            good += nxt.get(a) == b
            total += 1
    return good / total


def greedy(registry: ModelRegistry, name: str, frames: int = 40) -> torch.Tensor:
    batch = DecodeBatch(registry.get(name))
    handle = batch.add(DecodeRequest(prompt=PROMPT, n_frames=frames, seed=0, top_k=1))
    while handle not in batch.finished():
        batch.step()
    return batch.pop(handle)


# Not in the default run yet: inside the whole suite it failed twice in two clean-clone runs (once the
# loss ended at 0.95 instead of 0.04, once greedy output followed the pattern on 0.6% of steps), while
# alone it passed 9 runs of 10. Some state an earlier test leaves changes this chaotic run (lr 2e-2);
# until that is found, run it on its own:
#   AUDIOCRAFT_TEST_FINETUNE_EVIDENCE=1 .venv/bin/pytest test/integration/test_finetune_learns.py
pytestmark = pytest.mark.skipif(
    os.environ.get("AUDIOCRAFT_TEST_FINETUNE_EVIDENCE") != "1",
    reason="run alone with AUDIOCRAFT_TEST_FINETUNE_EVIDENCE=1: inside the suite an earlier test's state "
    "changes the training run (open, issue 19)",
)


@pytest.fixture
def one_thread():
    """The training run's thread count fixed here, as its own process fixes it in the service
    (AUDIOCRAFT_FINETUNE_THREADS): at this learning rate the run is chaotic, and the thread count an
    earlier test left (float reductions in another order) changed where it ended (a loss of 0.04
    alone, 0.95 after the whole suite)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_finetuned_model_generates_the_pattern_it_was_taught(tmp_path, one_thread):
    hub = tmp_path / "hub"
    write_tiny_models(hub, names=["musicgen-small"])
    spec = get_spec("musicgen-small")
    snapshot = store.snapshot_dir(spec, hub)
    job = FinetuneJob(
        base_model=spec.name, dataset="pattern", name=NAME, rank=8, alpha=16, learning_rate=2e-2,
        steps=80, total_steps=80, batch_size=2, ffn=True, heads=True, checkpoint_every=40,
    )  # fmt: skip
    codes = [pattern(FRAMES, phase) for phase in range(4)]  # four windows, each starting elsewhere in the cycle
    trainer = train.Trainer(
        train.load_base(snapshot, "musicgen"), AutoTokenizer.from_pretrained(snapshot), codes, [PROMPT] * 4, job
    )
    outcome = trainer.run(tmp_path / "checkpoint.pt")
    # The loss falls by more than 90%: from about ln(2048) = 7.6 (the first steps) to under a tenth of it.
    assert outcome.final_loss < outcome.first_loss / 10, (outcome.first_loss, outcome.final_loss)

    out = tmp_path / "result"
    out.mkdir()
    adapters.save(trainer, outcome, out, NAME, None)
    finetuned.install(hub, NAME, out)

    registry = ModelRegistry(Settings(models_dir=hub, data_dir=tmp_path / "data", device="cpu", dtype="float32"))
    tuned, base = follows(greedy(registry, NAME)), follows(greedy(registry, spec.name))
    print(f"loss {outcome.first_loss:.3f} -> {outcome.final_loss:.4f}; the cycle followed {tuned:.2f}, base {base:.2f}")
    assert tuned >= 0.9, tuned
    assert base <= 0.1, base
