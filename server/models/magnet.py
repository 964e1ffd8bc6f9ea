"""MAGNeT: an audiocraft export (lm_model transformer_lm_magnet), converted into the MusicGen classes
like AudioGen, loaded as a MagnetLM. Its transformer is MusicGen's with other attention masks; how it
decodes (server/engine/magnet.py) reads the masking settings the conversion keeps beside it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.audiogen import converted_folder
from server.models.convert.audiocraft_export import MAGNET_FILE
from server.models.convert.xpcfg import ConversionError, MagnetSettings
from server.models.loaded import TextToAudioLM
from server.models.musicgen import load_folder


@dataclass(kw_only=True)
class MagnetLM(TextToAudioLM):
    """A MAGNeT model: the text encoder, the (non-causal) decoder, EnCodec, and its masking settings."""

    masking: MagnetSettings

    @property
    def segment_frames(self) -> int:
        """The frames of its training segment: the attention masks audiocraft builds are this long."""
        return round(self.masking.segment_duration_s * self.frame_rate_hz)


def load_magnet(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> MagnetLM:
    return load_converted(spec, converted_folder(spec, snapshot), snapshot, device, precision)


def load_converted(spec: ModelSpec, folder: Path, snapshot: Path, device: torch.device, precision: str) -> MagnetLM:
    """A converted MAGNeT folder (server/models/convert/) as a MagnetLM."""
    settings_file = folder / MAGNET_FILE
    if not settings_file.is_file():
        raise ConversionError(f"{spec.name}: the export is not a MAGNeT model (its xp.cfg lm_model)")
    masking = MagnetSettings(**json.loads(settings_file.read_text()))
    lm = load_folder(spec, folder, snapshot, device, precision, audiocraft=True)
    shared = {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm) if f.init and not f.name.startswith("_")}
    return MagnetLM(**shared, masking=masking)
