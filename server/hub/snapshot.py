"""The one writer of the hub cache: a set of checked files becomes a repo snapshot.

Downloads (server/hub/download.py), imports (server/hub/importer.py) and the tiny fixtures
(server/tiny/write.py) all install through `install`, so what they leave is the same layout
huggingface_hub leaves (server/hub/store.py reads it):

- blobs/<etag>: the file's content, named as the hub names it: the sha256 for files the hub keeps
  in git LFS, the git blob sha1 for the others. Each blob is moved in with one rename, with the mode
  huggingface_hub gives its blobs (that of a new file in blobs/: the umask and any default ACL);
- snapshots/<commit>/<name>: relative links into blobs/, staged in the repo folder and renamed
  into place (over an older copy of the same commit, which is renamed away first);
- refs/main: the bare commit, no newline, written last through a rename. Until then the repo's
  previous snapshot, if any, is the one that counts; a crash midway leaves at most unused blobs.

Also here: the hub's names for contents (`file_etag`, `hub_file`) and the commit of a snapshot that
has none of its own (`commit_for`). Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from server.hub.store import repo_folder

# The suffixes the hub's default .gitattributes sends through git LFS, of the files a model repo
# holds (weights, sentencepiece models, torch pickles).
LFS_SUFFIXES = (".safetensors", ".bin", ".model", ".pt", ".pth")


@dataclass(frozen=True)
class HubFile:
    """One file of a snapshot as the hub describes it."""

    name: str  # the path in the repo, with "/" separators
    size: int
    etag: str  # sha256 for LFS files, git blob sha1 otherwise: the blob's name in the cache
    lfs: bool


def is_lfs(name: str) -> bool:
    """Whether the hub keeps a file of this name in git LFS (so its etag is the sha256)."""
    return name.endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_etag(path: Path, lfs: bool) -> str:
    """The etag of a file's content: its sha256 (LFS) or its git blob sha1, read in chunks."""
    h = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_file(name: str, path: Path) -> HubFile:
    """A local file as the hub would describe it under `name`."""
    lfs = is_lfs(name)
    return HubFile(name, Path(path).stat().st_size, file_etag(path, lfs), lfs)


def commit_for(files: Iterable[HubFile]) -> str:
    """A deterministic 40-hex commit for a snapshot with none from the hub: the sha1 over its file
    names and etags. The same files always give the same commit."""
    listing = "".join(f"{f.name}\0{f.etag}\n" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha1(listing.encode()).hexdigest()


def _tree_entry(f: HubFile) -> dict[str, object]:
    """A file's entry in huggingface_hub's tree listing (an LFS file's blob id is its pointer's)."""
    if not f.lfs:
        return {"size": f.size, "blob_id": f.etag}
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.etag}\nsize {f.size}\n".encode()
    return {"size": f.size, "blob_id": git_blob_sha1(pointer), "lfs_sha256": f.etag, "lfs_size": f.size}


def _new_file_mode(folder: Path) -> int:
    """The mode a new file gets in `folder`, as huggingface_hub finds it: by making one (the umask
    cannot be read without setting it, which races with other threads)."""
    probe = folder / f".mode-probe-{uuid.uuid4().hex[:8]}"
    probe.touch()
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def _replace_dir(staged: Path, target: Path) -> None:
    """Put the staged folder where `target` is; an old one is first renamed beside the staged one
    (outside snapshots/), then deleted."""
    if target.exists():
        old = staged.with_name(staged.name + ".old")
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, target)


def _write_via_rename(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def install(
    repo: str,
    commit: str,
    files: Iterable[HubFile],
    sources: Mapping[str, Path],
    hub_cache: Path,
    tree_listing: bool = False,
) -> Path:
    """Install `files` as snapshot `commit` of `repo` in hub_cache and point refs/main at it;
    returns the snapshot folder.

    sources[name] is a checked file holding that content; it is moved into blobs/ (on the same
    filesystem as hub_cache). A file with no source must already have its blob (a download that
    found it there). tree_listing also writes trees/<commit>.json, huggingface_hub's record of the
    commit's whole file list, with which snapshot_download tells a complete snapshot: only for a
    snapshot that holds every file of its repo.
    """
    files = tuple(files)
    repo_dir = repo_folder(repo, hub_cache)
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(blobs)
    for f in files:
        blob = blobs / f.etag
        if f.name in sources:
            os.chmod(sources[f.name], mode)  # some writers (safetensors) make 0600 files
            os.replace(sources[f.name], blob)
        elif not blob.is_file():
            raise FileNotFoundError(f"no source for {repo}/{f.name}, and no blob {f.etag} to reuse")

    snapshot = repo_dir / "snapshots" / commit
    snapshot.parent.mkdir(exist_ok=True)
    # Staged in the repo folder, not in snapshots/ (where anything is taken for a revision). The
    # links' text is relative to where they will be, so they resolve once renamed into place.
    staged = repo_dir / f".snapshot-staging-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        for f in files:
            (staged / f.name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blobs / f.etag, (snapshot / f.name).parent), staged / f.name)
        _replace_dir(staged, snapshot)
    finally:
        shutil.rmtree(staged, ignore_errors=True)

    if tree_listing:
        listing = {"format_version": 1, "files": {f.name: _tree_entry(f) for f in sorted(files, key=lambda f: f.name)}}
        _write_via_rename(repo_dir / "trees" / f"{commit}.json", json.dumps(listing, indent=1))
    _write_via_rename(repo_dir / "refs" / "main", commit)
    return snapshot
