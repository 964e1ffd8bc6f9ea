"""Which request schema each job kind carries: how a stored job's request is read back."""

from __future__ import annotations

from pydantic import BaseModel

from lib.schemas import INPUT_FIELDS, ContinuationRequest, MelodyRequest, MusicRequest, SoundRequest

REQUEST_TYPES: dict[str, type[BaseModel]] = {
    "music": MusicRequest,
    "sound": SoundRequest,
    "melody": MelodyRequest,
    "continuation": ContinuationRequest,
}

__all__ = ["INPUT_FIELDS", "REQUEST_TYPES"]
