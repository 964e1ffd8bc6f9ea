"""Errors of the codec. The HTTP layer maps them to answers (server/http/errors.py)."""

from __future__ import annotations


class EcdcError(ValueError):
    """An .ecdc file we cannot decode: truncated, corrupt, not .ecdc, or made by an unknown model.

    Always the sender's problem (a 4xx); `message` says what is wrong in words for them.
    """

    def __init__(self, message: str, code: str = "invalid_ecdc", field: str | None = "file", hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.hint = hint
