"""AudioGen: an audiocraft export, converted into the MusicGen classes, loaded as a TextToAudioLM."""

from __future__ import annotations

from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.loaded import TextToAudioLM
from server.models.musicgen import load_folder


def load_audiogen(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> TextToAudioLM:
    return load_folder(spec, converted_folder(spec, snapshot), snapshot, device, precision, audiocraft=True)


def converted_folder(spec: ModelSpec, snapshot: Path) -> Path:
    """The MusicGen-class copy of an audiocraft export: converted on first load (server/models/convert/),
    with the T5 repo the export names (and MusicGen-Style's MERT repo); then the converted copy beside
    it in the hub cache is what loads."""
    from server.hub import store
    from server.models.convert.cache import ensure_converted

    hub_cache = snapshot.parent.parent.parent  # <hub>/models--org--name/snapshots/<rev>
    extras = [store.transformers_snapshot(repo, hub_cache) for repo in spec.extra_repos]
    if not extras or any(extra is None for extra in extras):
        raise store.ModelNotInstalled(spec, hub_cache)
    # The T5 first; MusicGen-Style's MERT second.
    return ensure_converted(snapshot, extras[0], extras[1] if len(extras) > 1 else None)
