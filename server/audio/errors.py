"""Errors of the audio seam: the sender's file, always a 4xx."""

from __future__ import annotations

from lib.errors import Invalid


class AudioInputError(Invalid, ValueError):
    """An uploaded file we cannot use.

    ``message`` is written for the person who sent the file: it says what was wrong and what to do,
    so it is passed through unchanged (a 422), never as a 500. ``field`` names the request field that
    carried the file, when known (the answer says "audio" otherwise).
    """

    code = "invalid_audio"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)

    def body(self) -> dict:
        return {**super().body(), "field": self.field or "audio"}
