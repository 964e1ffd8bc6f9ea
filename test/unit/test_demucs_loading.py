"""htdemucs from its published layouts (server/models/demucs.py, server/hub/demucs_layout.py): both
load to the same model, and anything that is not exactly an HTDemucs checkpoint is refused."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lib.catalogue import HTDEMUCS
from server.hub import demucs_layout
from server.hub.importer import ImportFailed, import_model
from server.models.demucs import BadCheckpoint, load_demucs, load_separator
from server.tiny import demucs as tiny

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    return tiny.build(tiny.TINY_KWARGS, seed=1)


def _hub(folder: Path, model, kwargs=None) -> Path:
    tiny.save_hub_files(folder, model, kwargs or tiny.TINY_KWARGS)
    return folder


def _th(folder: Path, package: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(package, buf)
    path = folder / f"{tiny.SIGNATURE}-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.th"
    path.write_bytes(buf.getvalue())
    (folder / "htdemucs.yaml").write_text(f"models: ['{tiny.SIGNATURE}']\n")
    return path


def _package(model, **changes) -> dict:
    from demucs.htdemucs import HTDemucs

    state = {k: v.half() for k, v in model.state_dict().items()}
    return {"klass": HTDemucs, "args": [], "kwargs": dict(tiny.TINY_KWARGS), "state": state, **changes}


def test_both_layouts_give_the_same_weights(tmp_path, model):
    hub = load_demucs(HTDEMUCS, _hub(tmp_path / "hub", model), CPU, "float32")
    (tmp_path / "legacy").mkdir()
    tiny.save_th(tmp_path / "legacy", model, tiny.TINY_KWARGS)
    (tmp_path / "legacy" / "htdemucs.yaml").write_text(f"models: ['{tiny.SIGNATURE}']\n")
    legacy = load_demucs(HTDEMUCS, tmp_path / "legacy", CPU, "float32")
    a, b = hub.model.models[0].state_dict(), legacy.model.models[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Stored in half precision as demucs stores it, loaded into float32.
    want = {k: v.half().float() for k, v in model.state_dict().items()}
    assert all(torch.equal(a[k], want[k]) for k in a)
    assert all(p.dtype == torch.float32 for p in hub.model.parameters())
    assert hub.sources == tiny.SOURCES and hub.sample_rate == 44100 and hub.audio_channels == 2
    assert hub.memory_bytes() > 0


def test_the_real_shape_is_htdemucs_size():
    """The real kwargs build a model of the released one's size: its half-precision checkpoint is
    about 84 MB, some 42M parameters (these kwargs give 41.47M)."""
    from demucs.htdemucs import HTDemucs

    with torch.device("meta"):
        real = HTDemucs(**tiny.REAL_KWARGS)
    assert sum(p.numel() for p in real.parameters()) == pytest.approx(42e6, rel=0.02)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p["kwargs"].update(not_a_parameter=1), "not HTDemucs'"),
        (lambda p: p["state"].pop(next(iter(p["state"]))), "missing"),
        (lambda p: p["state"].update(extra=torch.zeros(1)), "unexpected"),
        (lambda p: p["state"].update({k: torch.zeros(3) for k in list(p["state"])[:1]}), r"is \(3,\)"),
        (lambda p: p["state"].update(__quantized=True), "quantized"),
        (lambda p: p.update(extra_key=1), "not a demucs checkpoint"),
    ],
)
def test_pickles_that_are_not_exactly_htdemucs_are_refused(tmp_path, model, change, message):
    package = _package(model)
    change(package)
    path = _th(tmp_path, package)
    with pytest.raises(BadCheckpoint, match=message):
        load_separator(path)


def test_a_pickle_naming_any_other_global_is_refused(tmp_path, model):
    """weights_only: only HTDemucs and Fraction may be named; anything else (code) never runs."""
    from demucs.hdemucs import HDemucs

    with pytest.raises(BadCheckpoint, match="loads safely"):
        load_separator(_th(tmp_path / "a", _package(model, klass=HDemucs)))
    with pytest.raises(BadCheckpoint, match="loads safely"):
        load_separator(_th(tmp_path / "b", _package(model, training_args={"f": print})))


def test_a_damaged_pickle_is_refused_by_its_checksum(tmp_path, model):
    path = tiny.save_th(tmp_path, model, tiny.TINY_KWARGS)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BadCheckpoint, match="damaged"):
        load_separator(path)


def test_safetensors_of_another_class_or_quantized_are_refused(tmp_path, model):
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    kwargs = json.dumps(demucs_kwargs())
    save_file(
        state, str(tmp_path / "a.safetensors"), {"klass": "demucs.hdemucs.HDemucs", "args": "[]", "kwargs": kwargs}
    )
    with pytest.raises(BadCheckpoint, match="not an demucs.htdemucs.HTDemucs"):
        load_separator(tmp_path / "a.safetensors")
    meta = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": kwargs, "structure": "{}"}
    save_file(state, str(tmp_path / "b.safetensors"), meta)
    with pytest.raises(BadCheckpoint, match="quantized"):
        load_separator(tmp_path / "b.safetensors")
    save_file(state, str(tmp_path / "c.safetensors"), {"klass": "demucs.htdemucs.HTDemucs"})
    with pytest.raises(BadCheckpoint, match="metadata"):
        load_separator(tmp_path / "c.safetensors")


def demucs_kwargs() -> dict:
    from server.models.demucs import encode_json

    return encode_json(tiny.TINY_KWARGS)


def test_wrong_rate_for_the_catalogue_entry(tmp_path):
    kwargs = {**tiny.TINY_KWARGS, "samplerate": 48000}
    _hub(tmp_path, tiny.build(kwargs, seed=2), kwargs)
    with pytest.raises(BadCheckpoint, match="48000 Hz"):
        load_demucs(HTDEMUCS, tmp_path, CPU, "float32")


@pytest.mark.parametrize(
    "text,message",
    [
        ("models: []\n", "no list of models"),
        ("models: ['nothex']\n", "not a model signature"),
        ("models: ['955717e8']\nsurprise: 1\n", "unknown bag field"),
        ("models: ['955717e8']\nweights: [[1, 1]]\n", None),
        ("[unclosed\n", "not a demucs bag"),
    ],
)
def test_bag_files(tmp_path, text, message):
    path = tmp_path / "htdemucs.yaml"
    path.write_text(text)
    if message is None:
        assert demucs_layout.read_bag(path).weights == ((1.0, 1.0),)
        return
    with pytest.raises(demucs_layout.BadBag, match=message):
        demucs_layout.read_bag(path)


def test_a_bag_is_complete_only_with_every_model(tmp_path, model):
    _hub(tmp_path, model)
    assert demucs_layout.is_complete(tmp_path)
    (tmp_path / "htdemucs.yaml").write_text(f"models: ['{tiny.SIGNATURE}', '0123abcd']\n")
    assert not demucs_layout.is_complete(tmp_path)
    with pytest.raises(BadCheckpoint, match="0123abcd"):
        load_demucs(HTDEMUCS, tmp_path, CPU, "float32")


def test_download_takes_the_bag_and_its_models():
    from server.hub.download import needed_files

    listing = ["htdemucs.yaml", "955717e8.safetensors", "README.md", ".gitattributes", "docs/x.yaml"]
    assert needed_files(listing, "demucs") == ["955717e8.safetensors", "README.md", "htdemucs.yaml"]


def test_import_of_a_folder_and_of_a_damaged_checkpoint(tmp_path, model):
    imported = import_model(_hub(tmp_path / "src", model), tmp_path / "hub")
    assert imported[0].repo == HTDEMUCS.repo
    assert sorted(imported[0].files) == [f"{tiny.SIGNATURE}.safetensors", "htdemucs.yaml"]
    path = tiny.save_th(tmp_path, model, tiny.TINY_KWARGS)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImportFailed, match="damaged"):
        import_model(path, tmp_path / "other-hub")
    with pytest.raises(ImportFailed, match="not a musicgen-small model"):
        import_model(tiny.save_th(tmp_path / "x", model, tiny.TINY_KWARGS), tmp_path / "hub3", name="musicgen-small")
