"""The parts of fine-tuning that need no model: names, windows, the schedule, batches, the delay
pattern the loss is computed over (the engine's own: server/engine/delay.py)."""

from __future__ import annotations

import pytest
import torch

from lib.finetune import FinetuneJob, FinetuneRequest, model_name
from server.engine.delay import codebook_delays, valid_positions
from server.finetune.build import _windows
from server.finetune.train import Trainer


def test_model_names():
    assert model_name("musicgen-small", "my-studio") == "musicgen-small+my-studio"
    assert model_name("musicgen-small", "musicgen-small+my_studio") == "musicgen-small+my_studio"
    for bad in ("musicgen-medium+x", "My Studio", "", "a/b", "..", "-x", "x" * 64):
        with pytest.raises(ValueError):
            model_name("musicgen-small", bad)


def test_steps_or_epochs_not_both():
    with pytest.raises(ValueError, match="steps or epochs"):
        FinetuneRequest(base_model="musicgen-small", dataset="d", name="x", steps=3, epochs=1)


def test_windows_drop_a_short_tail_but_keep_a_short_file():
    rate = 100
    assert _windows(250, rate, 1.0) == [(0, 100), (100, 100)]  # the 0.5 s tail is under MIN_WINDOW_S (1 s)
    assert _windows(300, rate, 1.0) == [(0, 100), (100, 100), (200, 100)]
    assert _windows(350, rate, 2.0) == [(0, 200), (200, 150)]  # a 1.5 s tail is kept
    assert _windows(120, rate, 30.0) == [(0, 120)]  # one window: the whole file


def _trainer(job: FinetuneJob, n: int, codebooks: int = 4, stereo: bool = False) -> Trainer:
    """A Trainer with only what batches and sequences need (no model)."""
    t = Trainer.__new__(Trainer)
    t.job, t.num_codebooks, t.pad, t.start = job, codebooks, 2048, 2048
    t.delays = codebook_delays(codebooks, stereo)
    t.codes = [torch.zeros(codebooks, 3, dtype=torch.long)] * n
    t._perms = {}
    return t


def _job(**kw) -> FinetuneJob:
    base = {"base_model": "musicgen-small", "dataset": "d", "name": "x", "steps": 10, "total_steps": 10}
    return FinetuneJob(**(base | kw))


def test_each_epoch_is_a_permutation_and_steps_are_reproducible():
    t = _trainer(_job(batch_size=3, seed=5), n=6)
    seen = [i for step in range(4) for i in t.batch_indices(step)]  # 12 draws: two epochs of 6
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    assert _trainer(_job(batch_size=3, seed=5), n=6).batch_indices(3) == t.batch_indices(3)  # no hidden state
    others = {tuple(_trainer(_job(batch_size=6, seed=s), n=6).batch_indices(0)) for s in range(8)}
    assert len(others) > 1  # the seed decides the order


def test_schedule_warms_up_then_decays_to_zero():
    t = _trainer(_job(learning_rate=1e-3, warmup_steps=2, total_steps=10, steps=None), n=1)
    assert t.lr_at(0) == pytest.approx(5e-4) and t.lr_at(1) == pytest.approx(1e-3)
    assert t.lr_at(2) == pytest.approx(1e-3) and t.lr_at(9) < 1e-4
    assert all(t.lr_at(s) >= t.lr_at(s + 1) for s in range(2, 9))


@pytest.mark.parametrize("stereo", [False, True])
def test_sequences_are_the_engines_delay_pattern(stereo):
    k = 8 if stereo else 4
    t = _trainer(_job(), n=2, codebooks=k, stereo=stereo)
    rows = [torch.arange(k * 5).view(k, 5), torch.arange(k * 3).view(k, 3) + 100]
    seq, real = t.sequences(rows)
    assert (seq[:, :, 0] == 2048).all()  # the start token
    expect = valid_positions(torch.tensor([5, 3]), t.delays, seq.shape[-1])
    assert torch.equal(real, expect)  # the loss counts exactly the positions the engine keeps
    for b, codes in enumerate(rows):
        for q, d in enumerate(t.delays.tolist()):
            n = codes.shape[1]
            assert torch.equal(seq[b, q, d + 1 : d + 1 + n], codes[q])
    assert (seq[~real] == 2048).all()  # everything else is the special token
