"""Model loads are one at a time in the process, across registries and lanes: transformers'
from_pretrained swaps PreTrainedModel.tie_weights for a no-op while it loads, so two overlapping
loads can leave the no-op in place and every later load keeps tied weights on the meta device (the
full suite hit it: two test clients' lanes loading at once)."""

from __future__ import annotations

import threading

import torch
from transformers import MusicgenForConditionalGeneration, PreTrainedModel

from lib.settings import Settings
from server.models import registry as registry_module
from server.models.registry import ModelRegistry

WAIT_S = 2.0  # how long the first load waits for a second one to join it (it must not)


def load_together(hub, n: int) -> list[ModelRegistry]:
    """n registries of one process, each loading musicgen-small in a thread of its own, all at once."""
    registries = [ModelRegistry(Settings(models_dir=hub, device="cpu", dtype="float32")) for _ in range(n)]
    threads = [threading.Thread(target=r.get, args=("musicgen-small",)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return registries


def test_two_registries_never_load_at_the_same_time(tiny_hub, monkeypatch):
    inside, most, entered = [0], [0], threading.Event()
    real = registry_module.LOADERS["musicgen"]

    def loader(*args):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        if inside[0] > 1:
            entered.set()
        else:
            entered.wait(WAIT_S)  # a second load, if it could start now, would set it
        try:
            return real(*args)
        finally:
            inside[0] -= 1

    monkeypatch.setitem(registry_module.LOADERS, "musicgen", loader)
    registries = load_together(tiny_hub, 2)
    assert most[0] == 1
    assert all(r.is_loaded("musicgen-small") for r in registries)


def test_loads_at_once_leave_transformers_tying_weights(tiny_hub):
    """Four loads started together, then a plain from_pretrained: T5's embed_tokens still tied."""
    original = PreTrainedModel.tie_weights
    load_together(tiny_hub, 4)
    assert PreTrainedModel.tie_weights is original
    model, info = MusicgenForConditionalGeneration.from_pretrained(
        "facebook/musicgen-small", cache_dir=tiny_hub, local_files_only=True, output_loading_info=True
    )
    assert info["missing_keys"] == set()
    assert not any(p.device == torch.device("meta") for p in model.parameters())
