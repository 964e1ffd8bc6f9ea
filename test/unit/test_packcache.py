"""The packed-decoder cache (server/models/packcache.py) on the tiny checkpoints: the first load writes
it, the next reads it (and not the float32 checkpoint) with the same tokens; a changed source, a
damaged or partial file, another format or quantization version are each ignored and rebuilt; two
loads at once build it once; a models dir that cannot be written loads without it; deleting the
model deletes it. Reading it overlaps packing the decoder: the result is exact, the packer waits for
each layer still being read, a read that fails midway fails the load and removes the file, and no
thread outlives a load."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from waiting import QUICK_HANG_GUARD_S

from lib.catalogue import get_spec
from lib.settings import Settings
from server.engine import fastlm
from server.engine.decode import DecodeBatch, DecodeRequest
from server.hub import store
from server.models import packcache, streamed, tensorfile
from server.models.errors import ModelLoadFailed
from server.models.loaders import LOADERS
from server.models.registry import LOADING, ModelRegistry
from server.tiny.write import write_tiny_models

CPU = torch.device("cpu")


def load(hub: Path, name: str, precision: str = "int8-dynamic"):
    spec = get_spec(name)
    return LOADERS[spec.kind](spec, store.snapshot_dir(spec, hub), CPU, precision)


def tokens(lm, frames: int = 12) -> list[int]:
    batch = DecodeBatch(lm)
    handle = batch.add(DecodeRequest("a cache test", frames, seed=7))
    while len(batch):
        batch.step()
    return batch.pop(handle).flatten().tolist()


def cache_file(hub: Path, name: str, form: str = "int8") -> Path:
    spec = get_spec(name)
    files = list((store.repo_folder(spec.repo, hub) / "packed" / form).glob("*.safetensors"))
    assert len(files) == 1, files
    return files[0]


def checkpoint(hub: Path, name: str) -> Path:
    return store.snapshot_dir(get_spec(name), hub) / "model.safetensors"


@pytest.fixture
def hub(tmp_path) -> Path:
    write_tiny_models(tmp_path, names=["musicgen-small"])
    return tmp_path


def written(caplog) -> int:
    return sum("wrote the packed-decoder cache" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "precision", "form"),
    [
        ("musicgen-small", "int8-dynamic", "int8"),
        ("musicgen-small", "int8", "int8"),
        ("musicgen-small", "bfloat16", "bfloat16"),
        ("musicgen-melody", "int8-dynamic", "int8"),
        ("audiogen-medium", "int8-dynamic", "int8"),  # cached beside its converted copy
    ],
)
def test_first_load_writes_it_and_the_next_reads_it_with_the_same_tokens(tmp_path, caplog, name, precision, form):
    write_tiny_models(tmp_path, names=[name])
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    first = load(tmp_path, name, precision)
    assert written(caplog) == 1
    path = cache_file(tmp_path, name, form)
    expected = tokens(first)
    with safe_open(path, framework="pt") as f:  # a plain safetensors file
        meta = f.metadata()
        assert meta["form"] == form and meta["format_version"] == str(packcache.FORMAT_VERSION)
        linear = next(k for k in f.keys() if k.endswith("fc1.weight"))
        assert f.get_tensor(linear).dtype == (torch.int8 if form == "int8" else torch.bfloat16)
    caplog.clear()
    second = load(tmp_path, name, precision)
    assert written(caplog) == 0 and any("from the packed-decoder cache" in r.getMessage() for r in caplog.records)
    assert second.fast.weight_bytes() == first.fast.weight_bytes()
    assert tokens(second) == expected


def test_a_load_from_the_cache_never_reads_the_float32_checkpoint(hub):
    expected = tokens(load(hub, "musicgen-small"))
    blob = checkpoint(hub, "musicgen-small")
    st = blob.stat()
    with open(blob, "r+b") as f:  # zeros of the same size and mtime: unloadable, but the same identity
        f.write(bytes(st.st_size))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tokens(load(hub, "musicgen-small")) == expected
    with pytest.raises(Exception):  # noqa: B017 - the checkpoint really is unreadable now
        load(hub, "musicgen-small", "float32")


def test_a_changed_source_is_rebuilt(hub, caplog):
    first = tokens(load(hub, "musicgen-small"))
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    config = store.snapshot_dir(get_spec("musicgen-small"), hub) / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # "edited"
    assert tokens(load(hub, "musicgen-small")) == first
    assert written(caplog) == 1 and any("is stale (source_files)" in r.getMessage() for r in caplog.records)
    with safe_open(cache_file(hub, "musicgen-small"), framework="pt") as f:
        files = json.loads(f.metadata()["source_files"])
    assert files["config.json"][1] == config.stat().st_mtime_ns


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: os.truncate(p, p.stat().st_size // 2),  # partial
        lambda p: os.truncate(p, 4),  # shorter than a header
        lambda p: p.write_bytes(b"\x10" + bytes(7) + b"{not json}" + bytes(64)),  # garbage header
        lambda p: p.write_bytes(p.read_bytes() + b"tail"),  # more bytes than the header names
    ],
    ids=["half", "stub", "garbage", "trailing"],
)
def test_a_damaged_cache_is_ignored_and_rebuilt(hub, caplog, damage):
    expected = tokens(load(hub, "musicgen-small"))
    path = cache_file(hub, "musicgen-small")
    size = path.stat().st_size
    damage(path)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert tokens(load(hub, "musicgen-small")) == expected
    assert written(caplog) == 1 and any("is damaged" in r.getMessage() for r in caplog.records)
    assert path.stat().st_size == size


def test_a_cache_of_other_tensors_is_rebuilt(hub, caplog):
    """A whole file whose tensors are not the model's (a structure change) is not used."""
    from server.models import tensorfile

    expected = tokens(load(hub, "musicgen-small"))
    path = cache_file(hub, "musicgen-small")
    with open(path, "rb") as f:
        entries, metadata, start = tensorfile.read_header(f)
        tensors = dict(tensorfile.read(f, entries, start))
    tensors.pop(next(iter(tensors)))
    with open(path, "wb") as f:
        tensorfile.write(f, tensors.items(), metadata)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert tokens(load(hub, "musicgen-small")) == expected
    assert any("does not fit the model" in r.getMessage() for r in caplog.records) and written(caplog) == 1


@pytest.mark.parametrize(("module", "name"), [(packcache, "FORMAT_VERSION"), (fastlm, "QUANT_VERSION")])
def test_another_format_or_quantization_version_is_rebuilt(hub, caplog, monkeypatch, module, name):
    expected = tokens(load(hub, "musicgen-small"))
    monkeypatch.setattr(module, name, getattr(module, name) + 1)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert tokens(load(hub, "musicgen-small")) == expected
    assert written(caplog) == 1
    with safe_open(cache_file(hub, "musicgen-small"), framework="pt") as f:
        meta = f.metadata()
    assert (meta["format_version"], meta["quant_version"]) == (
        str(packcache.FORMAT_VERSION),
        str(fastlm.QUANT_VERSION),
    )


def test_two_loads_at_once_build_it_once(hub, caplog):
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    results: dict[int, list[int]] = {}

    def run(i: int) -> None:  # each its own file descriptors: flock serializes them as it does processes
        results[i] = tokens(load(hub, "musicgen-small"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]
    assert written(caplog) == 1
    folder = cache_file(hub, "musicgen-small").parent
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]  # no temporary file left behind


def test_a_models_dir_that_cannot_be_written_loads_without_it(hub, caplog, monkeypatch):
    def full(*_a, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packcache.tempfile, "mkstemp", full)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    lm = load(hub, "musicgen-small")
    assert len(tokens(lm)) > 0
    assert any("could not write the packed-decoder cache" in r.getMessage() for r in caplog.records)
    folder = store.repo_folder(get_spec("musicgen-small").repo, hub) / "packed" / "int8"
    assert not list(folder.glob("*.safetensors"))


def test_its_size_counts_and_deleting_the_model_deletes_it(hub):
    spec = get_spec("musicgen-small")
    before = store.size_on_disk_bytes(spec, hub)
    load(hub, "musicgen-small")
    path = cache_file(hub, "musicgen-small")
    lock = path.with_suffix(".lock")
    assert store.size_on_disk_bytes(spec, hub) == before + path.stat().st_size + lock.stat().st_size
    store.remove_model(spec, hub)
    assert not path.exists() and store.size_on_disk_bytes(spec, hub) == 0


def test_float32_has_no_cache(hub):
    load(hub, "musicgen-small", "float32")
    assert not (store.repo_folder(get_spec("musicgen-small").repo, hub) / "packed").exists()


def test_a_cache_whose_source_folder_is_gone_is_removed(hub):
    load(hub, "musicgen-small")
    current = cache_file(hub, "musicgen-small")
    stale = current.with_name("0" * 40 + ".safetensors")  # a revision no longer in snapshots/
    stale.write_bytes(b"old revision")
    current.unlink()
    load(hub, "musicgen-small")
    assert not stale.exists()


def test_a_read_only_models_dir_loads_without_it(hub, caplog, monkeypatch):
    """As in a container whose models mount is read-only: not even the lock file can be made."""

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(30, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(packcache.os, "open", read_only)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert len(tokens(load(hub, "musicgen-small"))) > 0
    assert any("cannot be written" in r.getMessage() for r in caplog.records) and written(caplog) == 0


# -- reading while the decoder is packed ----------------------------------------------------------

LAYER_1 = "decoder.model.decoder.layers.1."


def layer_1(model):
    return model.decoder.model.decoder.layers[1]


def gated_read(monkeypatch, at: str, before) -> list[str]:
    """The reading thread calls before() when it reaches the first tensor named `at...`, and goes on
    when that returns (the seam: tensorfile.read). Returns the names it gave, as it gives them."""
    real = tensorfile.read
    given: list[str] = []

    def read(*args, **kwargs):
        held = False
        for name, value in real(*args, **kwargs):
            if name.startswith(at) and not held:
                held = True
                before()
            given.append(name)
            yield name, value

    monkeypatch.setattr(tensorfile, "read", read)
    return given


def lock_is_free(lock) -> bool:
    """Whether another thread can take `lock` now (it gives it back at once)."""
    free: list[bool] = []

    def attempt() -> None:
        free.append(lock.acquire(blocking=False))
        if free[0]:
            lock.release()

    other = threading.Thread(target=attempt)
    other.start()
    other.join()
    return free == [True]


def entry_count(path: Path) -> int:
    with open(path, "rb") as f:
        return len(tensorfile.read_header(f)[0])


def assert_no_new_threads(before: set[threading.Thread]) -> None:
    assert not [t.name for t in threading.enumerate() if t not in before]


def test_a_load_from_the_cache_holds_the_tensors_of_one_that_read_the_checkpoint(hub):
    """The first load builds the model whole and packs it after (no reading thread); the second packs
    as the cache is read: the same packed tensors, text encoder, codec and tokens."""
    first = load(hub, "musicgen-small")
    before = set(threading.enumerate())
    second = load(hub, "musicgen-small")
    assert_no_new_threads(before)
    for a, b in zip(first.fast.tensors(), second.fast.tensors(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    for part in ("text_encoder", "audio_encoder"):
        ours, theirs = getattr(first.model, part).state_dict(), getattr(second.model, part).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not any(p.is_meta for p in second.model.text_encoder.parameters())
    assert second.model.text_encoder.shared.weight is second.model.text_encoder.encoder.embed_tokens.weight
    assert tokens(second) == tokens(first)


def test_the_cache_is_laid_out_in_load_order(hub):
    load(hub, "musicgen-small")
    with open(cache_file(hub, "musicgen-small"), "rb") as f:
        entries, _, _ = tensorfile.read_header(f)
    in_file = sorted(entries, key=lambda name: entries[name].start)
    assert in_file[0].startswith("decoder.") and in_file[-1].startswith(("text_encoder.", "audio_encoder."))
    fc1 = in_file.index(f"{LAYER_1}fc1.weight")
    assert in_file[fc1 + 1] == f"{LAYER_1}fc1.weight_scale"  # its scales beside it, not at the end


def test_the_packer_waits_for_a_layer_still_being_read(hub, monkeypatch):
    """The reader is held before layer 1 until the packer asks for it: the packer asked while its
    weights were not yet in, waited, and packed the same model."""
    expected = tokens(load(hub, "musicgen-small"))
    asked = threading.Event()
    seen_meta: list[bool] = []
    real_wait = streamed.BackgroundReads.wait

    def wait(self, module):
        if module is layer_1(self.model):
            seen_meta.append(any(p.is_meta for p in module.parameters()))
            asked.set()
        return real_wait(self, module)

    def close(self):  # a load that failed without asking (it did not wait) lets the reader go on
        asked.set()
        real_close(self)

    real_close = streamed.BackgroundReads.close
    monkeypatch.setattr(streamed.BackgroundReads, "wait", wait)
    monkeypatch.setattr(streamed.BackgroundReads, "close", close)
    given = gated_read(monkeypatch, LAYER_1, lambda: asked.wait(QUICK_HANG_GUARD_S) or pytest.fail("never asked"))
    lm = load(hub, "musicgen-small")
    assert seen_meta == [True]
    assert given[0].startswith("decoder.") and len(given) == entry_count(cache_file(hub, "musicgen-small"))
    assert tokens(lm) == expected


def test_a_file_laid_out_in_another_order_is_still_read(hub, caplog):
    """A cache written before the load order (buffers after every parameter) is valid: the reader
    seeks to each tensor."""
    expected = tokens(load(hub, "musicgen-small"))
    path = cache_file(hub, "musicgen-small")
    with open(path, "rb") as f:
        entries, metadata, start = tensorfile.read_header(f)
        tensors = dict(tensorfile.read(f, entries, start))
    with open(path, "wb") as f:
        tensorfile.write(f, reversed(list(tensors.items())), metadata)
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert tokens(load(hub, "musicgen-small")) == expected
    assert written(caplog) == 0


def cut_short(path: Path):
    def damage() -> None:  # the file loses its second half under the reader
        os.truncate(path, path.stat().st_size // 2)

    return damage


def fail_with_eio() -> None:
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("damage", ["eio", "cut short"])
def test_a_read_that_fails_midway_fails_the_load_and_removes_the_file(hub, caplog, monkeypatch, damage):
    expected = tokens(load(hub, "musicgen-small"))
    path = cache_file(hub, "musicgen-small")
    monkeypatch.setattr(tensorfile, "_RUN_TENSORS", 1)  # a read per tensor: the cut is met by the next one
    gated_read(monkeypatch, LAYER_1, fail_with_eio if damage == "eio" else cut_short(path))
    registry = ModelRegistry(Settings(models_dir=hub, device="cpu", dtype="int8-dynamic"))
    before = set(threading.enumerate())
    with pytest.raises(ModelLoadFailed) as failed:
        registry.get("musicgen-small")
    message = failed.value.message
    assert message.startswith("could not load musicgen-small: its packed-decoder cache could not be read")
    assert ("Input/output error" if damage == "eio" else "the file ends inside it") in message
    assert "was removed, so the next load builds it again" in message and str(hub) not in message
    assert not path.exists()
    assert_no_new_threads(before)
    assert not registry.is_loaded("musicgen-small")
    assert lock_is_free(LOADING)
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="audiocraft.engine")
    assert tokens(registry.get("musicgen-small")) == expected
    assert written(caplog) == 1 and path.exists()


def test_a_load_that_fails_elsewhere_stops_the_read(hub, monkeypatch):
    """The tokenizer fails to load while the cache is still being read: the reading thread stops
    (before the rest of the file), the load's own error goes on, and the file is kept."""
    import transformers

    load(hub, "musicgen-small")
    path = cache_file(hub, "musicgen-small")
    closing = threading.Event()
    real_close = streamed.BackgroundReads.close

    def close(self):
        closing.set()
        real_close(self)

    def no_tokenizer(*_a, **_kw):
        raise OSError("the tokenizer's files are missing")

    monkeypatch.setattr(streamed.BackgroundReads, "close", close)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_tokenizer)
    given = gated_read(monkeypatch, LAYER_1, lambda: closing.wait(QUICK_HANG_GUARD_S) or pytest.fail("not closed"))
    before = set(threading.enumerate())
    with pytest.raises(OSError, match="tokenizer's files are missing"):
        load(hub, "musicgen-small")
    assert_no_new_threads(before)
    assert 0 < len(given) < entry_count(path)  # stopped where it was
    assert path.exists()
