"""Errors of the decode runtime."""

from __future__ import annotations

from lib.errors import Invalid


class UnsupportedRequest(Invalid):
    """The request is well-formed but this model or build can't do it."""

    code = "unsupported"

    def __init__(self, message: str, hint: str | None = None, field: str | None = None):
        super().__init__(message, hint=hint, field=field)
