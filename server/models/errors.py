"""Errors of model management. Torch-free: the HTTP layer and the jobs import them."""

from __future__ import annotations

from lib.errors import Conflict, Unavailable


class ModelInUse(Conflict):
    """The model is held by running work (or downloading) and cannot be unloaded or deleted now."""

    code = "model_in_use"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


class MemoryBudgetFull(Unavailable):
    code = "memory_budget_full"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


class ModelLoadFailed(Unavailable):
    code = "model_load_failed"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


class AdapterMismatch(Conflict):
    """A fine-tuned model's adapter does not fit the base installed under its base's name."""

    code = "adapter_base_mismatch"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)
