"""The loader of each model kind: the one table the registry reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lib.catalogue import ModelSpec
from server.models.audiogen import load_audiogen
from server.models.audioseal import load_audioseal
from server.models.demucs import load_demucs
from server.models.encodec import load_encodec
from server.models.loaded import ResidentModel
from server.models.magnet import load_magnet
from server.models.mbd import load_mbd
from server.models.musicgen import load_musicgen
from server.models.style import load_style

if TYPE_CHECKING:
    import torch


class Loader(Protocol):
    def __call__(self, spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> ResidentModel:
        """Load `spec` from its local snapshot folder (no network) onto `device`; `precision` is the
        one the settings give the model, which kinds without a quantized form ignore."""
        ...


LOADERS: dict[str, Loader] = {
    "musicgen": load_musicgen,
    "musicgen-melody": load_musicgen,
    "musicgen-style": load_style,
    "audiogen": load_audiogen,
    "magnet": load_magnet,
    "encodec": load_encodec,
    "audioseal": load_audioseal,
    "mbd": load_mbd,
    "demucs": load_demucs,
}
