"""MusicGen-Style: an audiocraft export converted into the MusicgenMelody class (its style tokens and
the text prepended), plus its style conditioner and MERT (server/models/convert/style.py, mert.py),
loaded as a StyleLM."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.audiogen import converted_folder
from server.models.loaded import TextToAudioLM, storage_bytes
from server.models.musicgen import load_folder


@dataclass(kw_only=True)
class StyleLM(TextToAudioLM):
    """A MusicGen-Style model: the MusicGen parts, and the conditioner with its MERT."""

    style: torch.nn.Module = field(repr=False)  # server/engine/style.py StyleConditioner (its .mert set)

    @property
    def melody(self) -> bool:
        return False  # its prefix is the style tokens, not a chroma (server/engine/decode.py style_prefix)

    @property
    def styled(self) -> bool:
        return True

    @property
    def style_settings(self):
        return self.style.settings

    def memory_bytes(self) -> int:
        return super().memory_bytes() + storage_bytes(self.style.parameters()) + storage_bytes(self.style.buffers())


def load_style(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> StyleLM:
    return load_converted(spec, converted_folder(spec, snapshot), snapshot, device, precision)


def load_converted(spec: ModelSpec, folder: Path, source: Path, device: torch.device, precision: str) -> StyleLM:
    """A converted MusicGen-Style folder (server/models/convert/) as a StyleLM."""
    from transformers import HubertModel

    from server.models.convert.style import MERT_DIR, STYLE_SETTINGS
    from server.models.convert.style import load_style as load_conditioner
    from server.models.convert.xpcfg import ConversionError

    if not (folder / STYLE_SETTINGS).is_file():
        raise ConversionError(f"{spec.name}: the export is not a MusicGen-Style model (no style conditioner)")
    lm = load_folder(spec, folder, source, device, precision, audiocraft=True)
    conditioner = load_conditioner(folder)
    conditioner.mert = HubertModel.from_pretrained(folder / MERT_DIR, dtype=torch.float32, local_files_only=True)
    conditioner.to(device).eval()
    shared = {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm) if f.init and not f.name.startswith("_")}
    return StyleLM(**shared, style=conditioner)
