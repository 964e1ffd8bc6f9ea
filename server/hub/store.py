"""Where models live: a directory in the Hugging Face hub cache layout.

    <hub_cache>/models--<org>--<name>/
        blobs/<etag>                      file contents (sha256 for LFS files, git blob sha1 otherwise)
        snapshots/<commit>/<file>         relative symlinks into blobs/
        refs/main                         the commit that "main" points to

One writer makes this layout (server/hub/snapshot.py). A model counts as installed only when
refs/main names a snapshot that holds every file the engine needs, so an interrupted download or
write is never mistaken for a model. Everything here reads a
few small files and never touches the network: GET /api/models calls it for every catalogue entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name

from lib.catalogue import ModelSpec
from lib.errors import Conflict

# Any one of these is a complete set of weights for a transformers-format repo.
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_TRANSFORMERS_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Extra repos (AudioGen's T5) are plain transformers repos; a T5 snapshot also needs its tokenizer.
_AUDIOCRAFT_FILES = ("state_dict.bin", "compression_state_dict.bin")
# AudioSeal's checkpoints (facebook/audioseal); its base.yaml, when the repo has one, comes too.
AUDIOSEAL_FILES = ("generator_base.pth", "detector_base.pth")
AUDIOSEAL_CONFIG = "base.yaml"
# Multi-Band Diffusion (facebook/multiband-diffusion): the checkpoint for MusicGen's 32 kHz EnCodec.
MBD_FILES = ("mbd_musicgen_32khz.th",)
# A fine-tuned model (server/hub/finetuned.py): a PEFT adapter and its facts.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "finetune.json")


class ModelNotInstalled(Conflict, LookupError):
    """The model's weights are not in the hub cache (or only partly): a 409 wherever it is found."""

    code = "model_not_installed"

    def __init__(self, spec: ModelSpec, hub_cache: Path | None = None):
        self.spec = spec
        self.hub_cache = hub_cache
        hint = f"resource-audiocraft models pull {spec.name}"
        # Not the directory: answers never show the host's paths (the server's log names it).
        super().__init__(f"model {spec.name} ({spec.repo}) is not installed; run: {hint}", field="model", hint=hint)


# Downloads in progress live here (server/hub/download.py), outside any repo folder.
PARTIAL_DIR = ".audiocraft-partial"


def partial_folder(repo: str, hub_cache: Path) -> Path:
    """Where a repo's download keeps its partial and checked files until it installs them."""
    return Path(hub_cache) / PARTIAL_DIR / repo_folder_name(repo_id=repo, repo_type="model")


def repo_folder(repo: str, hub_cache: Path) -> Path:
    """The cache folder of a model repo: models--org--name."""
    return Path(hub_cache) / repo_folder_name(repo_id=repo, repo_type="model")


def current_revision(repo: str, hub_cache: Path) -> str | None:
    """The commit refs/main points to, or None when there is no readable ref."""
    ref = repo_folder(repo, hub_cache) / "refs" / "main"
    try:
        rev = ref.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    # A ref names a commit: 40 hex digits. Anything else is not something we wrote or downloaded.
    if len(rev) != 40 or any(c not in "0123456789abcdef" for c in rev.lower()):
        return None
    return rev


def _has_transformers_weights(snapshot: Path) -> bool:
    if not (snapshot / "config.json").is_file():
        return False
    if any((snapshot / name).is_file() for name in _TRANSFORMERS_WEIGHTS):
        return True
    for index_name in _TRANSFORMERS_INDEXES:
        index = snapshot / index_name
        if not index.is_file():
            continue
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if shards and all((snapshot / shard).is_file() for shard in shards):
            return True
    return False


def _complete(snapshot: Path, hub_format: str) -> bool:
    # is_file() follows the snapshot's symlinks, so a link to a missing blob counts as missing.
    if hub_format == "transformers":
        return _has_transformers_weights(snapshot)
    if hub_format == "audiocraft":
        return all((snapshot / name).is_file() for name in _AUDIOCRAFT_FILES)
    if hub_format == "adapter":
        return all((snapshot / name).is_file() for name in ADAPTER_FILES)
    if hub_format == "audioseal":
        return all((snapshot / name).is_file() for name in AUDIOSEAL_FILES)
    if hub_format == "mbd":
        return all((snapshot / name).is_file() for name in MBD_FILES)
    if hub_format == "demucs":
        from server.hub import demucs_layout

        return demucs_layout.is_complete(snapshot)
    raise ValueError(f"unknown hub format: {hub_format!r}")


def _snapshot_of(repo: str, hub_format: str, hub_cache: Path) -> Path | None:
    rev = current_revision(repo, hub_cache)
    if rev is None:
        return None
    snapshot = repo_folder(repo, hub_cache) / "snapshots" / rev
    return snapshot if snapshot.is_dir() and _complete(snapshot, hub_format) else None


def snapshot_dir(spec: ModelSpec, hub_cache: Path) -> Path | None:
    """The snapshot refs/main points to, if it holds the files the engine needs; else None."""
    return _snapshot_of(spec.repo, spec.hub_format, hub_cache)


def transformers_snapshot(repo: str, hub_cache: Path) -> Path | None:
    """The complete snapshot of a plain transformers repo (an extra repo, such as AudioGen's T5)."""
    return _snapshot_of(repo, "transformers", hub_cache)


def is_installed(spec: ModelSpec, hub_cache: Path) -> bool:
    """The model and every extra repo it needs at run time (AudioGen's T5) are complete."""
    if snapshot_dir(spec, hub_cache) is None:
        return False
    return all(_snapshot_of(repo, "transformers", hub_cache) is not None for repo in spec.extra_repos)


def size_on_disk_bytes(spec: ModelSpec, hub_cache: Path) -> int:
    """Bytes held in the repo folder's blobs/ (all revisions), converted/ (AudioGen's converted
    copy, server/models/convert/cache.py) and packed/ (the packed-decoder cache,
    server/models/packcache.py); 0 when absent. Deleting the model deletes all three.

    Only the spec's own repo: extra repos (AudioGen's T5) may be shared with other models.
    """
    folder = repo_folder(spec.repo, hub_cache)
    return sum(_tree_bytes(folder / part) for part in ("blobs", "converted", "packed"))


def remove_model(spec: ModelSpec, hub_cache: Path) -> int:
    """Delete the model's repo, and its extra repos unless another installed model needs them;
    returns the bytes freed. (Whether the model is in use is the caller's business.)"""
    from lib.catalogue import all_specs

    others = [s for s in all_specs() if s.name != spec.name and is_installed(s, hub_cache)]
    shared = {repo for s in others for repo in s.extra_repos}
    return sum(remove_repo(repo, hub_cache) for repo in (spec.repo, *spec.extra_repos) if repo not in shared)


def remove_repo(repo: str, hub_cache: Path) -> int:
    """Delete a repo folder (and any partial download of it); returns the bytes freed.

    The folder is first renamed out of the way, so a crash midway never leaves something that
    looks like a model."""
    import shutil
    import uuid

    hub_cache = Path(hub_cache)
    freed = 0
    for folder in (repo_folder(repo, hub_cache), partial_folder(repo, hub_cache)):
        if not folder.exists():
            continue
        freed += _tree_bytes(folder)
        trash = hub_cache / f".audiocraft-trash-{uuid.uuid4().hex[:8]}"
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(f"{partial_folder(repo, hub_cache)}.lock")
    return freed


def _tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under folder (links not followed); 0 when absent."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
