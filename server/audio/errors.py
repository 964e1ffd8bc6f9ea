"""Errors of the audio seam that the HTTP layer turns into 4xx answers."""

from __future__ import annotations


class AudioInputError(ValueError):
    """An uploaded file we cannot use.

    ``message`` is written for the person who sent the file: it says what was wrong and what to do,
    so the HTTP layer can pass it through unchanged (as a 400/422), never as a 500.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # the request field that carried the file, when known
