"""AudioSeal: the strict conversion of its published checkpoints, the converted cache, and the
embed/detect functions on the tiny model. (What the modules compute is checked against the audioseal
package in test/conformance/test_audioseal.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lib.catalogue import get_spec
from server.engine import watermark
from server.hub import store
from server.models.audioseal import converted_dir, load_audioseal
from server.models.convert.audioseal import CONFIG_FILE, DETECTOR_FILE, GENERATOR_FILE, build_config, convert_snapshot
from server.models.convert.xpcfg import ConversionError

SPEC = get_spec("audioseal")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tiny_hub):
    return load_audioseal(SPEC, store.snapshot_dir(SPEC, tiny_hub), CPU, "float32")


@pytest.fixture
def snapshot(tiny_hub, tmp_path) -> Path:
    """A private copy of the tiny snapshot's files, to change."""
    out = tmp_path / "snap"
    shutil.copytree(store.snapshot_dir(SPEC, tiny_hub), out)
    return out


def _rewrite(path: Path, change) -> None:
    pkg = torch.load(path, weights_only=True)
    change(pkg)
    path.unlink()  # the copy's files are links into the hub's blobs: never write through them
    torch.save(pkg, path)


def test_the_tiny_snapshot_is_the_published_layout(tiny_hub):
    snap = store.snapshot_dir(SPEC, tiny_hub)
    assert {GENERATOR_FILE, DETECTOR_FILE, CONFIG_FILE} <= {p.name for p in snap.iterdir()}
    gen = torch.load(snap / GENERATOR_FILE, weights_only=True)
    assert set(gen) == {"xp.cfg", "model"} and gen["xp.cfg"]["sample_rate"] == 16000
    assert "msg_processor.msg_processor.weight" in gen["model"]
    assert "decoder.model.3.convtr.convtr.weight" in gen["model"] and "encoder.model.0.conv.conv.bias" in gen["model"]
    det = torch.load(snap / DETECTOR_FILE, weights_only=True)
    assert {"detector.0.reverse_convolution.weight", "detector.1.weight"} <= set(det["model"])
    assert yaml.safe_load((snap / CONFIG_FILE).read_text())["audioseal"]["nbits"] == 16


def test_it_loads_from_a_converted_copy_beside_the_original(tiny_hub, model):
    snap = store.snapshot_dir(SPEC, tiny_hub)
    folder = converted_dir(snap)
    assert folder.parent == snap.parent.parent / "converted"
    assert {p.name for p in folder.iterdir()} == {"generator.safetensors", "detector.safetensors", "watermark.json"}
    stamp = (folder / "watermark.json").stat().st_mtime_ns
    again = load_audioseal(SPEC, snap, CPU, "float32")  # the copy is reused, not written again
    assert (folder / "watermark.json").stat().st_mtime_ns == stamp
    assert again.generator.nbits == 16 and again.memory_bytes() > 0


def test_weight_norm_in_either_naming_converts_to_the_same_weights(snapshot, tmp_path):
    plain, _, _ = build_config(snapshot)
    convert_snapshot(snapshot, tmp_path / "plain")

    def split(pkg, suffixes):
        state = {}
        for key, t in pkg["model"].items():
            if key.endswith((".conv.conv.weight", ".convtr.convtr.weight")):
                base = key[: -len(".weight")]
                state[base + suffixes[0]] = torch.linalg.vector_norm(t, dim=(1, 2), keepdim=True)
                state[base + suffixes[1]] = t.clone()
            else:
                state[key] = t
        pkg["model"] = state

    from safetensors.torch import load_file

    for naming, suffixes in (
        ("legacy", (".weight_g", ".weight_v")),
        ("parametrization", (".parametrizations.weight.original0", ".parametrizations.weight.original1")),
    ):
        copy = tmp_path / naming
        shutil.copytree(snapshot, copy)
        for name in (GENERATOR_FILE, DETECTOR_FILE):
            _rewrite(copy / name, lambda pkg, s=suffixes: split(pkg, s))
        convert_snapshot(copy, tmp_path / f"{naming}-out")
        for file in ("generator.safetensors", "detector.safetensors"):
            want, got = load_file(tmp_path / "plain" / file), load_file(tmp_path / f"{naming}-out" / file)
            assert want.keys() == got.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("file", "change", "says"),
    [
        (
            GENERATOR_FILE,
            lambda p: p["model"].update(extra=torch.zeros(1)),
            "unmapped key in generator_base.pth: 'extra'",
        ),
        (GENERATOR_FILE, lambda p: p["model"].pop("encoder.model.0.conv.conv.bias"), "encoder.layers.0.conv.bias"),
        (DETECTOR_FILE, lambda p: p["model"].pop("detector.1.weight"), "detector_base.pth has no 'detector.1.weight'"),
        (
            GENERATOR_FILE,
            lambda p: p["model"].update({"encoder.model.0.conv.conv.weight": torch.zeros(4, 1, 5)}),
            "shape mismatch",
        ),
        (GENERATOR_FILE, lambda p: p["xp.cfg"].update(normalizer=True), "normalizer"),
        (DETECTOR_FILE, lambda p: p["xp.cfg"].update(sample_rate=24000), "16000 Hz only"),
        (DETECTOR_FILE, lambda p: p["xp.cfg"]["seanet"].update(n_filters=8), "different SEANets"),
        (
            GENERATOR_FILE,
            lambda p: p["xp.cfg"]["seanet"]["decoder"].update(final_activation="Tanh"),
            "final activation",
        ),
        (GENERATOR_FILE, lambda p: p["xp.cfg"].update(nbits=8), "nbits = 8"),
        (
            GENERATOR_FILE,
            lambda p: p["model"].update({"msg_processor.msg_processor.weight": torch.zeros(8, 16)}),
            "not one message width",
        ),
        (
            GENERATOR_FILE,
            lambda p: p["model"].update({"encoder.model.0.conv.conv.weight_g": torch.ones(4, 1, 1)}),
            "encoder.model.0.conv.conv has weight norm without its direction (weight_v)",
        ),
        (
            GENERATOR_FILE,
            lambda p: p["model"].update({f"encoder.model.0.conv.conv.weight_{x}": torch.ones(4, 1, 1) for x in "gv"}),
            "has both a weight and a weight-norm pair",
        ),
        (GENERATOR_FILE, lambda p: p.pop("xp.cfg"), "has no 'xp.cfg'"),
    ],
)
def test_conversion_is_strict(snapshot, tmp_path, file, change, says):
    _rewrite(snapshot / file, change)
    with pytest.raises(ConversionError) as info:
        convert_snapshot(snapshot, tmp_path / "out")
    assert says in info.value.message
    assert info.value.status == 422


def test_base_yaml_is_checked_against_the_checkpoints(snapshot, tmp_path):
    cfg = yaml.safe_load((snapshot / CONFIG_FILE).read_text())
    cfg["audioseal"]["nbits"] = 32
    (snapshot / CONFIG_FILE).unlink()
    (snapshot / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConversionError, match="audioseal.nbits = 32"):
        convert_snapshot(snapshot, tmp_path / "out")
    (snapshot / CONFIG_FILE).unlink()  # optional: the checkpoints' own configs suffice
    config, _, _ = build_config(snapshot)
    assert config.nbits == 16 and config.output_dim == 32


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused(snapshot, tmp_path):
    (snapshot / GENERATOR_FILE).unlink()
    torch.save({"xp.cfg": {}, "model": {}, "hook": shutil.rmtree}, snapshot / GENERATOR_FILE)
    with pytest.raises(ConversionError, match="not a readable AudioSeal checkpoint"):
        convert_snapshot(snapshot, tmp_path / "out")


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    rows = [0.3 * np.sin(2 * np.pi * (330 + 110 * c) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (32000, 2), (44100, 1)])
def test_embed_adds_a_small_mark_at_any_rate(model, rate, channels):
    audio = _tone(rate, 1.3, channels)
    marked = watermark.embed(model.generator, audio, rate, 0xBEEF)
    assert marked.shape == audio.shape and marked.dtype == np.float32
    mark = marked - audio
    ratio = float(np.sqrt((mark**2).mean() / (audio**2).mean()))
    assert 0.01 < ratio < 0.5  # the tiny mark sits about 20 dB under the audio
    assert not np.allclose(marked, watermark.embed(model.generator, audio, rate, 0x1234))  # the message counts


def test_embed_at_44k_marks_only_up_to_8khz(model):
    """The mark is made at 16 kHz and resampled back: above its Nyquist the audio is untouched."""
    audio = _tone(44100, 2.0)
    mark = (watermark.embed(model.generator, audio, 44100, 7) - audio)[0]
    spectrum = np.abs(np.fft.rfft(mark))
    freqs = np.fft.rfftfreq(mark.size, 1 / 44100)
    assert spectrum[freqs > 9000].max() < 1e-3 * spectrum[freqs < 7000].max()


def test_long_audio_goes_in_pieces_with_the_same_answer_per_piece(model, monkeypatch):
    audio = _tone(16000, 3.0)
    whole = watermark.embed(model.generator, audio, 16000, 5)
    monkeypatch.setattr(watermark, "PIECE_S", 1.0)
    pieces = watermark.embed(model.generator, audio, 16000, 5)
    first = watermark.embed(model.generator, audio[:, :16000], 16000, 5)
    np.testing.assert_allclose(pieces[:, :16000], first, atol=1e-6)
    assert pieces.shape == whole.shape
    found = watermark.detect(model.detector, pieces, 16000)
    assert len(found) == 1 and 0.0 <= found[0].score <= 1.0 and len(found[0].bits) == 16


def test_detect_reads_each_channel(model):
    found = watermark.detect(model.detector, _tone(32000, 1.0, channels=2), 32000)
    assert len(found) == 2
    for d in found:
        assert d.detected == (d.score > watermark.DETECTION_THRESHOLD)
        assert d.message == watermark.bits_value(d.bits) and 0 <= d.message < 2**16
    with pytest.raises(ValueError, match="empty"):
        watermark.detect(model.detector, np.zeros((1, 0), np.float32), 16000)


def test_message_bits_round_trip():
    assert watermark.message_bits(0xBEEF, 16) == [int(b) for b in f"{0xBEEF:016b}"]
    assert watermark.bits_value(watermark.message_bits(12345, 16)) == 12345
    with pytest.raises(ValueError):
        watermark.message_bits(2**16, 16)


def test_downloads_and_imports_take_the_published_files(snapshot, tmp_path):
    from server.hub import download
    from server.hub.importer import ImportFailed, import_model

    listing = ["README.md", ".gitattributes", GENERATOR_FILE, DETECTOR_FILE, CONFIG_FILE, "extra.ckpt"]
    assert download.needed_files(listing, "audioseal") == sorted([CONFIG_FILE, DETECTOR_FILE, GENERATOR_FILE])
    assert download.needed_files([GENERATOR_FILE, DETECTOR_FILE], "audioseal") == [DETECTOR_FILE, GENERATOR_FILE]
    hub = tmp_path / "hub"
    (installed,) = import_model(snapshot, hub, name="audioseal")
    assert set(installed.files) == {GENERATOR_FILE, DETECTOR_FILE, CONFIG_FILE}
    assert store.is_installed(SPEC, hub)
    assert load_audioseal(SPEC, store.snapshot_dir(SPEC, hub), CPU, "float32").detector.nbits == 16
    (snapshot / DETECTOR_FILE).unlink()
    with pytest.raises(ImportFailed, match="does not hold a complete facebook/audioseal"):
        import_model(snapshot, tmp_path / "other", name="audioseal")
