"""Errors of the codec."""

from __future__ import annotations

from lib.errors import Invalid


class EcdcError(Invalid, ValueError):
    """An .ecdc file we cannot decode: truncated, corrupt, not .ecdc, or made by an unknown model.

    Always the sender's problem (a 422); `message` says what is wrong in words for them.
    """

    def __init__(self, message: str, code: str = "invalid_ecdc", field: str | None = "file", hint: str | None = None):
        super().__init__(message, code=code, field=field, hint=hint)
