"""Tiny models into a hub cache, through the hub's one writer (server/hub/snapshot.py).

Each repo's files are saved into a staging folder inside hub_cache, installed there as a repo
folder of its own (blobs, snapshots/<commit>, trees/<commit>.json, refs/main), and that folder is
renamed into place. A crash never leaves a half-written model behind, and a write that fails keeps
the model that was there. Only a stand-in (or an empty folder) is ever replaced: real weights and
partial downloads are left alone (FileExistsError).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lib.catalogue import CATALOGUE, ModelSpec, get_spec
from server.hub import snapshot
from server.hub.store import repo_folder
from server.tiny.dims import SUPPORTED_KINDS, TINY, check_supported, model_seed

README_MARKER = "tiny random-weight stand-in written by resource-audiocraft"
_STAGING_PREFIX = ".tiny-staging-"
_STALE_STAGING_S = 3600.0


def _readme(spec: ModelSpec) -> str:
    return (
        f"# {spec.repo} ({README_MARKER})\n\n"
        "Random weights with the real structure and tiny widths, for tests and offline use.\n"
        "It makes noise, not music. Replace it with the real weights: "
        f"`resource-audiocraft models pull {spec.name}`.\n"
    )


def _save_files(spec: ModelSpec, out: Path, seed: int) -> None:
    """The files of one catalogue entry's repo, by kind (the README comes from write_repo)."""
    if spec.kind == "musicgen-style":  # audiocraft's export format, with its style conditioner
        from server.tiny import style

        style.save_files(out, model_seed(spec.name, seed), TINY["text_encoder"]["d_model"])
    elif spec.kind in ("audiogen", "magnet"):  # audiocraft's export format, as it is on the hub
        from server.tiny.audiocraft_export import magnet_cfgs, save_export

        cfgs = (None, None)  # AudioGen's
        if spec.kind == "magnet":
            cfgs = magnet_cfgs(spec.segment_s, audio="sound" in spec.capabilities)
        save_export(out, model_seed(spec.name, seed), TINY["text_encoder"]["d_model"], *cfgs)
    elif spec.kind == "audioseal":  # its published checkpoints
        from server.tiny import audioseal

        audioseal.save_files(out, model_seed(spec.name, seed))
    elif spec.kind == "mbd":  # the published checkpoint layout (server/tiny/mbd.py)
        from server.tiny import mbd

        mbd.save_files(out, model_seed(spec.name, seed))
    elif spec.kind == "encodec":
        from server.tiny import encodec

        encodec.save_files(spec, out, seed)
    elif spec.kind == "demucs":  # demucs 4.1's hub layout
        from server.tiny import demucs

        demucs.save_files(out, model_seed(spec.name, seed))
    else:
        from server.tiny import musicgen

        musicgen.save_files(spec, out, seed)


def is_tiny_or_empty(folder: Path) -> bool:
    """Whether a repo folder may be replaced: it holds one of our tiny models, or no blobs at all."""
    blobs = folder / "blobs"
    if not blobs.is_dir() or not any(blobs.iterdir()):
        return True
    try:
        rev = (folder / "refs" / "main").read_text().strip()
        readme = (folder / "snapshots" / rev / "README.md").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return README_MARKER in readme


def _refuse_real_weights(target: Path) -> None:
    if target.exists() and not is_tiny_or_empty(target):
        raise FileExistsError(
            f"{target} holds files that are not a tiny model (real weights?); "
            "refusing to replace it. Remove it first to write a tiny model there."
        )


def _clean_stale_staging(hub_cache: Path) -> None:
    now = time.time()
    for entry in hub_cache.glob(f"{_STAGING_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _swap_in(staged: Path, target: Path, staging: Path) -> None:
    """Swap the staged repo folder into place. Both renames stay inside hub_cache (one filesystem)."""
    if target.exists() or target.is_symlink():
        os.rename(target, staging / "replaced")
    os.rename(staged, target)


def write_tiny_model(spec: ModelSpec, hub_cache: Path, seed: int = 0) -> Path:
    """Write one tiny model (and the extra repos it needs, AudioGen's T5) into hub_cache; returns its
    snapshot folder."""
    from server.tiny import t5

    check_supported(spec)
    from server.tiny import style

    for repo in spec.extra_repos:
        if repo == style.MERT_REPO:  # MusicGen-Style's feature extractor
            readme = f"# {repo} ({README_MARKER})\n\nA tiny random-weight MERT for {spec.name}.\n"
            write_repo(repo, readme, hub_cache, lambda out, r=repo: style.save_mert(out, model_seed(r, seed)))
            continue
        readme = f"# {repo} ({README_MARKER})\n\nA tiny random-weight T5 for {spec.name}.\n"
        write_repo(repo, readme, hub_cache, lambda out, r=repo: t5.save_files(out, model_seed(r, seed)))
    return write_snapshot(spec, hub_cache, lambda out: _save_files(spec, out, seed))


def write_snapshot(spec: ModelSpec, hub_cache: Path, save_files: Callable[[Path], None]) -> Path:
    """Install the files `save_files(folder)` writes as spec's repo in hub_cache; returns the
    snapshot folder. Also used by the benchmarks for random-weight models of the real shapes."""
    return write_repo(spec.repo, _readme(spec), hub_cache, save_files)


def write_repo(repo: str, readme: str, hub_cache: Path, save_files: Callable[[Path], None]) -> Path:
    """write_snapshot for any repo name (extra repos have no catalogue entry of their own). Its
    commit is the hub writer's `commit_for` the files, so the same files give the same commit."""
    hub_cache = Path(hub_cache)
    target = repo_folder(repo, hub_cache)
    _refuse_real_weights(target)
    hub_cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=hub_cache))
    try:
        folder = staging / "files"
        folder.mkdir()
        save_files(folder)
        if not (folder / "README.md").exists():
            (folder / "README.md").write_text(readme)
        sources = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        files = [snapshot.hub_file(name, path) for name, path in sources.items()]
        commit = snapshot.commit_for(files)
        # The staging folder is a hub cache of its own: the repo is complete there before it moves.
        snapshot.install(repo, commit, files, sources, staging, tree_listing=True)
        _swap_in(repo_folder(repo, staging), target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "snapshots" / commit


def write_tiny_models(hub_cache: Path, names: Iterable[str] | None = None, seed: int = 0) -> list[str]:
    """Write tiny models into hub_cache; returns the names written.

    names=None writes every catalogue entry of a supported kind and skips the rest; an explicitly
    named entry of an unsupported kind raises ValueError (before anything is written), an unknown
    name raises lib.catalogue.UnknownModel.
    """
    hub_cache = Path(hub_cache)
    if names is None:
        specs = [s for s in CATALOGUE.values() if s.kind in SUPPORTED_KINDS]
    else:
        specs = [get_spec(n) for n in dict.fromkeys(names)]
        for spec in specs:
            check_supported(spec)
    for spec in specs:  # refuse before writing anything
        for repo in (spec.repo, *spec.extra_repos):
            _refuse_real_weights(repo_folder(repo, hub_cache))
    if hub_cache.is_dir():
        _clean_stale_staging(hub_cache)
    written = []
    for spec in specs:
        write_tiny_model(spec, hub_cache, seed=seed)
        written.append(spec.name)
    return written
