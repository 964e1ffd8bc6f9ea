"""The fine-tune's precision choice and its half-precision paths, run on the CPU (this machine has no
GPU): what "auto" picks on each device, and a few bf16 and fp16 autocast steps of the real trainer on
a tiny MusicGen (fp16 with its gradient scaler, whose state the checkpoint keeps). On CUDA the same
code runs with the device's autocast; that path itself is not run here (docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from lib.catalogue import get_spec
from lib.finetune import FinetuneJob
from server.finetune import train
from server.hub import store
from server.tiny.write import write_tiny_models

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("bf16_card", [True, False])
def test_auto_is_fp32_on_a_cpu_and_half_on_cuda(monkeypatch, bf16_card):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_card)
    assert train.autocast_dtype("auto", CPU) is None
    assert train.autocast_dtype("auto", CUDA) is (torch.bfloat16 if bf16_card else torch.float16)
    for device in (CPU, CUDA):  # an explicit choice is taken as it is
        assert train.autocast_dtype("float32", device) is None
        assert train.autocast_dtype("bfloat16", device) is torch.bfloat16
        assert train.autocast_dtype("float16", device) is torch.float16


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    hub = tmp_path_factory.mktemp("hub")
    write_tiny_models(hub, names=["musicgen-small"])
    return store.snapshot_dir(get_spec("musicgen-small"), hub)


def _run(snapshot, tmp_path, precision: str, steps: int = 2):  # noqa: ANN001, ANN202
    job = FinetuneJob(
        base_model="musicgen-small", dataset="d", name="musicgen-small+p", rank=4, learning_rate=1e-2,
        steps=steps, total_steps=steps, batch_size=2, precision=precision, checkpoint_every=1,
    )  # fmt: skip
    codes = [torch.randint(0, 2048, (4, 30), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    trainer = train.Trainer(
        train.load_base(snapshot, "musicgen"), AutoTokenizer.from_pretrained(snapshot), codes, ["a", "b"], job
    )
    start = trainer.adapter_state()
    outcome = trainer.run(tmp_path / f"{precision}.pt")
    return trainer, start, outcome


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_precision_autocast_steps_on_the_cpu(snapshot, tmp_path, precision, one_thread):
    _, _, fp32 = _run(snapshot, tmp_path, "float32")
    trainer, start, half = _run(snapshot, tmp_path, precision)
    assert trainer.autocast is getattr(torch, precision)
    assert trainer.scaler.is_enabled() == (precision == "float16")
    # The forward really ran in half precision: the first loss is near fp32's, not the same number.
    assert half.losses[0] != fp32.losses[0]
    assert half.losses[0] == pytest.approx(fp32.losses[0], rel=0.02)
    assert all(torch.isfinite(torch.tensor(half.losses)))
    end = trainer.adapter_state()
    assert all(v.dtype == torch.float32 for v in end.values())  # the adapters stay fp32
    assert any(not torch.equal(start[k], end[k]) for k in start)  # and the steps moved them
    saved = torch.load(tmp_path / f"{precision}.pt", weights_only=True)
    assert bool(saved["scaler"]) == (precision == "float16")  # fp16's gradient scale is checkpointed
