"""A MusicGen-Melody fine-tune trains on what generation feeds the model: each window's decoder prefix
(its chroma, or the null melody where it is dropped, then the text) is the prefix the engine builds
for that melody and prompt (server/engine/decode.py melody_prefix), and the chroma changes the loss."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from lib.catalogue import get_spec
from lib.finetune import FinetuneJob
from server.engine.decode import melody_prefix
from server.finetune import train
from server.hub import store
from server.tiny.write import write_tiny_models

CAPTIONS = ["calm piano", "a long caption of strings and brass at night"]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    hub = tmp_path_factory.mktemp("hub")
    write_tiny_models(hub, names=["musicgen-melody"])
    snapshot = store.snapshot_dir(get_spec("musicgen-melody"), hub)
    job = FinetuneJob(
        base_model="musicgen-melody", dataset="d", name="musicgen-melody+t", rank=4, steps=2, total_steps=2,
        batch_size=2,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, 2048, (4, 25), generator=g) for _ in CAPTIONS]
    chroma = [torch.randint(0, 12, (8,), generator=g).to(torch.int8) for _ in CAPTIONS]
    model, tokenizer = train.load_base(snapshot, "musicgen-melody"), AutoTokenizer.from_pretrained(snapshot)
    t = train.Trainer(model, tokenizer, codes, CAPTIONS, job, kind="musicgen-melody", chroma=chroma)
    t.engine = SimpleNamespace(
        model=model, tokenizer=tokenizer, device=t.device, melody=True
    )  # what melody_prefix reads
    return t


def test_the_training_prefix_is_the_one_generation_builds(trainer):
    lm = trainer.engine
    with torch.no_grad():
        for window, caption in enumerate(CAPTIONS):
            text = trainer.text[caption][0]
            onehot = F.one_hot(trainer.chroma[window].long(), 12).float()
            want = melody_prefix(lm, caption, onehot, with_null=False)
            torch.testing.assert_close(trainer.melody_prefix(window, True, text), want, rtol=0, atol=0)
            # The melody dropped: generation's prompt without a melody.
            without = melody_prefix(lm, caption, None, with_null=False)
            torch.testing.assert_close(trainer.melody_prefix(window, False, text), without, rtol=0, atol=0)


def test_the_windows_chroma_conditions_the_logits(trainer):
    """Rows of both text lengths (they go through the decoder apart), the melody kept."""
    seq, _ = trainer.sequences(trainer.codes)
    inputs, text = seq[:, :, :-1], [trainer.text[c][0] for c in CAPTIONS]
    with torch.no_grad():
        logits = trainer._melody_logits(inputs, [0, 1], [True, True], text)
        saved = list(trainer.chroma)
        trainer.chroma = [(c + 5) % 12 for c in saved]  # another melody over the same codes
        try:
            other = trainer._melody_logits(inputs, [0, 1], [True, True], text)
        finally:
            trainer.chroma = saved
        alone = trainer._melody_logits(inputs[1:], [1], [True], text[1:])
    assert logits.shape == (2, 4, inputs.shape[-1], 2048)
    assert not torch.allclose(logits, other)
    torch.testing.assert_close(logits[1:], alone)  # a row's logits do not depend on its batch-mates
