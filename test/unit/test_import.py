"""Air-gapped import (server/hub/importer.py): hub caches, snapshots, audiocraft exports, archives."""

from __future__ import annotations

import shutil
import tarfile
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lib.catalogue import get_spec
from lib.settings import Settings
from server.hub import store
from server.hub.importer import ImportFailed, import_model
from server.models.registry import ModelRegistry

SMALL = get_spec("musicgen-small")
AUDIOGEN = get_spec("audiogen-medium")


def test_a_tarred_hub_cache_folder_installs_and_loads(tiny_hub, tmp_path):
    source = store.repo_folder(SMALL.repo, tiny_hub)
    archive = tmp_path / "musicgen-small.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(source, arcname=source.name)  # its symlinks into blobs/ travel as links
    hub = tmp_path / "hub"
    [done] = import_model(archive, hub)
    assert done.repo == SMALL.repo
    assert done.commit == store.current_revision(SMALL.repo, tiny_hub)  # the hub's commit is kept
    assert store.is_installed(SMALL, hub)
    assert "model.safetensors" in done.files and "README.md" not in done.files
    lm = ModelRegistry(Settings(models_dir=hub, device="cpu", dtype="float32")).get(SMALL.name)
    assert lm.spec.name == SMALL.name
    assert not list(hub.glob(".audiocraft-import-*"))  # the staging folder is gone
    with pytest.raises(FileExistsError):
        import_model(archive, hub)
    import_model(archive, hub, force=True)


def test_a_plain_snapshot_folder_needs_its_name(tiny_hub, tmp_path):
    files = tmp_path / "copied"
    shutil.copytree(store.snapshot_dir(SMALL, tiny_hub), files)  # links resolved: plain files
    with pytest.raises(ImportFailed, match="--name"):
        import_model(files, tmp_path / "hub")
    with pytest.raises(ImportFailed, match="not 'encodec'"):
        import_model(files, tmp_path / "hub", name="encodec-24khz")
    import_model(files, tmp_path / "hub", name=SMALL.name)
    assert store.is_installed(SMALL, tmp_path / "hub")


def test_damaged_weights_are_refused_and_nothing_is_installed(tiny_hub, tmp_path):
    files = tmp_path / "copied"
    shutil.copytree(store.snapshot_dir(SMALL, tiny_hub), files)
    weights = files / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated in the copy
    hub = tmp_path / "hub"
    with pytest.raises(ImportFailed, match="truncated"):
        import_model(files, hub, name=SMALL.name)
    assert not store.repo_folder(SMALL.repo, hub).exists()
    assert [p.name for p in hub.iterdir()] == []


def test_an_audiocraft_export_zip_with_its_t5(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    torch.save({"best_state": {"w": torch.zeros(3)}}, export / "state_dict.bin")
    torch.save({"best_state": {"w": torch.ones(3)}}, export / "compression_state_dict.bin")
    archive = tmp_path / "audiogen.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in export.iterdir():
            z.write(p, f"audiogen/{p.name}")
    hub = tmp_path / "hub"
    [done] = import_model(archive, hub)
    assert done.repo == AUDIOGEN.repo and set(done.files) == {"state_dict.bin", "compression_state_dict.bin"}
    assert not store.is_installed(AUDIOGEN, hub)  # its T5 is still missing

    t5 = tmp_path / "cache" / "models--google-t5--t5-large" / "snapshots" / ("a" * 40)
    t5.mkdir(parents=True)
    (t5 / "config.json").write_text('{"model_type": "t5"}')
    save_file({"shared.weight": torch.zeros(4, 2)}, str(t5 / "model.safetensors"))
    (t5 / "spiece.model").write_bytes(b"\x80spm")
    [done] = import_model(tmp_path / "cache", hub)
    assert done.repo == "google-t5/t5-large"
    assert store.is_installed(AUDIOGEN, hub)


def test_an_audiocraft_export_of_a_musicgen_model_is_explained(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "state_dict.bin").write_bytes(b"\x80x")
    (export / "compression_state_dict.bin").write_bytes(b"\x80x")
    with pytest.raises(ImportFailed, match="transformers format"):
        import_model(export, tmp_path / "hub", name=SMALL.name)


def test_unsafe_archives_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    payload = tmp_path / "x"
    payload.write_text("x")
    with tarfile.open(archive, "w") as t:
        t.add(payload, arcname="../escape.txt")
    with pytest.raises(ImportFailed, match="unsafe"):
        import_model(archive, tmp_path / "hub")
    assert not (tmp_path / "hub" / ".." / "escape.txt").exists()
