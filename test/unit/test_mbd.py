"""Multi-Band Diffusion's checkpoint reader and sampler pieces, on the tiny checkpoint `make-tiny` writes
(the audio itself is checked against audiocraft in test/conformance/test_mbd_conformance.py)."""

from __future__ import annotations

import pytest
import torch

from lib.catalogue import get_spec, mbd_for
from server.engine.mbd.diffusion import step_list
from server.models.convert.mbd_checkpoint import MUSICGEN_FILE, convert_checkpoint, read_checkpoint
from server.models.convert.xpcfg import ConversionError
from server.tiny.mbd import save_files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("mbd")
    save_files(out, seed=0)
    return out / MUSICGEN_FILE


def test_twenty_steps_are_audiocrafts_default_chain():
    assert step_list(20) == list(range(1000))[::-50] + [0]
    assert step_list(7) == [999, 857, 715, 573, 431, 289, 147, 0]
    assert len(step_list(100)) == 101 and step_list(1) == [999, 0]


def test_only_musicgen_has_an_mbd():
    assert mbd_for(get_spec("musicgen-stereo-melody-large")).name == "mbd-musicgen-32khz"
    assert mbd_for(get_spec("audiogen-medium")) is None
    assert mbd_for(get_spec("encodec-32khz")) is None


def test_the_tiny_checkpoint_converts_and_loads_strictly(checkpoint, tmp_path):
    from server.models.mbd import load_folder

    convert_checkpoint(checkpoint, tmp_path / "converted")
    mbd = load_folder(get_spec("mbd"), tmp_path / "converted", checkpoint.parent, torch.device("cpu"))
    assert len(mbd.multiband.bands) == 4
    assert [b.processor is not None for b in mbd.multiband.bands] == [False, False, True, True]
    latent = torch.randn(2, 16, 10)
    wav = mbd.multiband.generate(latent, 6400, steps=2, gen=torch.Generator().manual_seed(0))
    assert wav.shape == (2, 1, 6400) and torch.isfinite(wav).all()


def _tampered(checkpoint, tmp_path, change):
    pkg = torch.load(checkpoint, weights_only=False)
    change(pkg)
    path = tmp_path / MUSICGEN_FILE
    torch.save(pkg, path)
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p[0]["model_state"].pop("embedding.weight"), "has no \"[0]['model_state']['embedding.weight']\""),
        (lambda p: p[1]["model_state"].update(extra=torch.zeros(1)), "unmapped key in the export: \"[1]"),
        (lambda p: p[2]["model_state"].update({"conv_codec.weight": torch.zeros(3, 3, 1)}), "mismatch for \"[2]"),
        (lambda p: p[3]["cfg"].diffusion_unet.update(transformer=True), "transformer bottleneck"),
        (lambda p: p[0]["cfg"].diffusion_unet.update(attention=True), "diffusion_unet.attention is not a setting"),
        (lambda p: p[0]["cfg"].schedule.update(repartition="sigmoid"), "only power converts"),
        (lambda p: p.pop(3), "band 3 needs cfg"),
    ],
)  # fmt: skip
def test_a_checkpoint_that_does_not_convert_exactly_is_refused_naming_the_key(checkpoint, tmp_path, change, message):
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(_tampered(checkpoint, tmp_path, change), tmp_path / "out")
    assert message in str(err.value)


def test_a_checkpoint_that_would_run_code_is_not_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / MUSICGEN_FILE
    torch.save({"sample_rate": 32000, "n_bands": 0, "x": Evil()}, path)
    with pytest.raises(ConversionError, match="not a readable MBD checkpoint"):
        read_checkpoint(path)


def test_a_copied_checkpoint_imports_and_needs_only_its_file(checkpoint, tmp_path):
    """`models import DIR` of the repo's files (any of its four checkpoints beside): the MusicGen one only."""
    import shutil

    from server.hub import download, importer, store

    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(checkpoint, files / MUSICGEN_FILE)
    (files / "mbd_comp_4.pt").write_bytes(b"\x80not needed")
    hub = tmp_path / "hub"
    [imported] = importer.import_model(files, hub)
    assert imported.files == (MUSICGEN_FILE,)
    assert store.is_installed(get_spec("mbd"), hub)
    listing = ["README.md", "mbd_comp_2.pt", "mbd_comp_4.pt", "mbd_comp_8.pt", MUSICGEN_FILE]
    assert download.needed_files(listing, "mbd") == [MUSICGEN_FILE]


def test_the_cli_sends_the_decoder_and_checks_it_first():
    from cli.errors import CliError
    from cli.generation import build_request

    assert build_request("x", decoder="mbd", mbd_steps=4) == {"prompt": "x", "decoder": "mbd", "mbd_steps": 4}
    with pytest.raises(CliError, match="--decoder"):
        build_request("x", decoder="diffusion")
