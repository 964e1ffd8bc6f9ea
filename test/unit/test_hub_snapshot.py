"""The hub cache's one writer (server/hub/snapshot.py), and the hub's rooms staying torch-free."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fresh_imports import modules_loaded_by

from server.hub import snapshot, store

REPO = "facebook/musicgen-small"


def test_importing_the_hub_does_not_load_torch():
    code = "import importlib, pkgutil, server.hub\n"
    code += "for m in pkgutil.iter_modules(server.hub.__path__):\n    importlib.import_module(f'server.hub.{m.name}')\n"
    loaded = modules_loaded_by(code)
    assert {"server.hub.store", "server.hub.download", "server.hub.importer", "server.hub.snapshot"} <= loaded
    assert {name.split(".")[0] for name in loaded} & {"torch", "transformers", "numpy"} == set()


def _files(folder: Path, contents: dict[str, bytes]) -> tuple[list[snapshot.HubFile], dict[str, Path]]:
    sources = {}
    for name, data in contents.items():
        path = folder / name.replace("/", "_")
        path.write_bytes(data)
        sources[name] = path
    return [snapshot.hub_file(n, p) for n, p in sources.items()], sources


def test_files_are_named_as_the_hub_names_them(tmp_path: Path):
    files, _ = _files(tmp_path, {"model.safetensors": b"weights", "config.json": b"{}"})
    by_name = {f.name: f for f in files}
    assert (
        by_name["model.safetensors"].lfs and by_name["model.safetensors"].etag == hashlib.sha256(b"weights").hexdigest()
    )
    assert not by_name["config.json"].lfs
    assert by_name["config.json"].etag == hashlib.sha1(b"blob 2\0{}").hexdigest()
    # The commit of a snapshot without one depends on its files, not on their order.
    assert snapshot.commit_for(files) == snapshot.commit_for(reversed(files))
    assert len(snapshot.commit_for(files)) == 40


def test_install_then_again_over_the_same_commit(tmp_path: Path):
    hub = tmp_path / "hub"
    (tmp_path / "a").mkdir()
    files, sources = _files(tmp_path / "a", {"config.json": b"{}", "sub/model.safetensors": b"w1"})
    snap = snapshot.install(REPO, "c" * 40, files, sources, hub)
    assert snap == store.repo_folder(REPO, hub) / "snapshots" / ("c" * 40)
    assert store.current_revision(REPO, hub) == "c" * 40
    assert os.readlink(snap / "sub" / "model.safetensors") == f"../../../blobs/{hashlib.sha256(b'w1').hexdigest()}"
    assert (snap / "sub" / "model.safetensors").read_bytes() == b"w1"
    assert not sources["config.json"].exists()  # moved into blobs/

    # The same commit again, with other files: the snapshot holds exactly the new ones, and
    # nothing staged is left in the repo folder.
    (tmp_path / "b").mkdir()
    files, sources = _files(tmp_path / "b", {"config.json": b"{}", "model.safetensors": b"w2"})
    snapshot.install(REPO, "c" * 40, files, sources, hub)
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors"]
    assert (snap / "model.safetensors").read_bytes() == b"w2"
    assert sorted(p.name for p in store.repo_folder(REPO, hub).iterdir()) == ["blobs", "refs", "snapshots"]
    assert [p.name for p in (store.repo_folder(REPO, hub) / "refs").iterdir()] == ["main"]


def test_a_file_without_a_source_needs_its_blob(tmp_path: Path):
    hub = tmp_path / "hub"
    missing = snapshot.HubFile("config.json", 2, "0" * 40, lfs=False)
    with pytest.raises(FileNotFoundError, match="no source"):
        snapshot.install(REPO, "d" * 40, [missing], {}, hub)
    assert store.current_revision(REPO, hub) is None  # refs/main comes last

    # A blob already in the cache (a download that found it there) is linked without a source.
    files, sources = _files(tmp_path, {"config.json": b"{}"})
    snapshot.install(REPO, "e" * 40, files, sources, hub)
    snap = snapshot.install(REPO, "f" * 40, files, {}, hub)
    assert (snap / "config.json").read_bytes() == b"{}"
    assert store.current_revision(REPO, hub) == "f" * 40
