"""AudioGen: an audiocraft export, converted into the MusicGen classes, loaded as a TextToAudioLM."""

from __future__ import annotations

from pathlib import Path

import torch

from lib.catalogue import ModelSpec
from server.models.loaded import TextToAudioLM
from server.models.musicgen import load_folder


def load_audiogen(spec: ModelSpec, snapshot: Path, device: torch.device, precision: str) -> TextToAudioLM:
    """Converted on first load (server/models/convert/), with the T5 repo the export names; then the
    converted copy beside it in the hub cache is what loads."""
    return load_folder(spec, converted_folder(spec, snapshot), snapshot, device, precision, audiocraft=True)


def converted_folder(spec: ModelSpec, snapshot: Path) -> Path:
    """The MusicGen-class folder converted from the export at `snapshot` (converting it first when
    there is none), with the T5 repo the export names."""
    from server.hub import store
    from server.models.convert.cache import ensure_converted

    hub_cache = snapshot.parent.parent.parent  # <hub>/models--org--name/snapshots/<rev>
    t5_snapshots = [store.transformers_snapshot(repo, hub_cache) for repo in spec.extra_repos]
    if not t5_snapshots or t5_snapshots[0] is None:
        raise store.ModelNotInstalled(spec, hub_cache)
    return ensure_converted(snapshot, t5_snapshots[0])
