"""The registry's memory budget: LRU unloading of idle models, leases, idle timeout, freeing."""

from __future__ import annotations

import gc
import weakref

import pytest
from engine_reference import held

from lib.settings import Settings
from server.models.errors import MemoryBudgetFull, ModelInUse
from server.models.registry import ModelRegistry

A, B, C = "musicgen-small", "musicgen-medium", "musicgen-large"  # tiny ones: the same size


def registry(tiny_hub, **settings) -> ModelRegistry:
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32", **settings))


@pytest.fixture(scope="module")
def one_model_bytes(tiny_hub) -> int:
    r = registry(tiny_hub)
    r.get(A)
    return r.memory_of(A)


def test_a_third_model_unloads_the_least_recently_used_of_two(tiny_hub, one_model_bytes):
    r = registry(tiny_hub, memory_budget_gb=2.5 * one_model_bytes / 1e9)
    r.get(A)
    r.get(B)
    r.get(A)  # A is now the more recently used
    assert [lm.spec.name for lm in r.loaded()] == [A, B]
    r.get(C)
    assert sorted(lm.spec.name for lm in r.loaded()) == sorted([A, C])  # B went


def test_a_model_under_running_work_is_never_unloaded(tiny_hub, one_model_bytes):
    r = registry(tiny_hub, memory_budget_gb=2.5 * one_model_bytes / 1e9)
    with held(r, A):  # A is the least recently used, but a job holds it
        r.get(B)
        r.get(C)
        assert sorted(lm.spec.name for lm in r.loaded()) == sorted([A, C])
        with pytest.raises(ModelInUse):
            r.unload(A)
    assert r.in_use(A) == 0
    assert r.unload(A)


def test_loading_past_the_budget_with_every_model_busy_is_refused(tiny_hub, one_model_bytes):
    r = registry(tiny_hub, memory_budget_gb=1.5 * one_model_bytes / 1e9)
    with held(r, A), pytest.raises(MemoryBudgetFull, match="musicgen-small") as info:
        r.get(B)
    assert "AUDIOCRAFT_MEMORY_BUDGET_GB" in info.value.hint
    assert [lm.spec.name for lm in r.loaded()] == [A]


def test_one_model_bigger_than_the_budget_still_loads_alone(tiny_hub):
    r = registry(tiny_hub, memory_budget_gb=1e-6)
    assert r.get(A).spec.name == A


def test_idle_models_unload_after_the_timeout(tiny_hub):
    r = registry(tiny_hub, model_idle_timeout_s=60)
    lm_a = r.get(A)
    r.get(B)
    assert r.unload_idle(now=lm_a.last_used + 30) == []
    with held(r, B):
        assert r.unload_idle(now=r.get(B).last_used + 61) == [A]  # B is held: it stays
    assert [lm.spec.name for lm in r.loaded()] == [B]
    assert registry(tiny_hub, model_idle_timeout_s=0).unload_idle(now=1e12) == []  # 0 = never


def test_unloading_frees_the_model(tiny_hub):
    r = registry(tiny_hub)
    model = weakref.ref(r.get(A).model)
    assert r.unload(A)
    gc.collect()
    assert model() is None  # nothing keeps the weights alive
    assert r.memory_of(A) is None and not r.is_loaded(A)
    assert r.unload(A) is False
