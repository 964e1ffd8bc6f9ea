"""Domain errors of the engine. The HTTP layer maps them to answers in one place."""

from __future__ import annotations


class EngineError(Exception):
    """Base class; `code` is the stable machine-readable name."""

    code = "engine_error"

    def __init__(self, message: str, hint: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


class UnsupportedRequest(EngineError):
    """The request is well-formed but this model or build can't do it."""

    code = "unsupported"


class ModelLoadFailed(EngineError):
    code = "model_load_failed"


class GenerationFailed(EngineError):
    code = "generation_failed"
