"""Multi-Band Diffusion against the audiocraft package (spec §4; issue 21 part 2).

oracle_mbd.py, run by the oracle venv's python, builds a tiny compression model and a tiny 4-band MBD
with audiocraft's builders, saves the MBD in the published checkpoint layout, and decodes fixed
tokens through `MultiBandDiffusion.tokens_to_wav` after `torch.manual_seed(seed)`. Here the engine
converts that checkpoint with its own reader, loads it, and decodes the same tokens with the same
seed (its noise drawn in the package's order from a generator seeded alike): the audio must match.

The project's own tiny checkpoint (`models make-tiny`) goes the other way: audiocraft's
`load_diffusion_models` must load it, and both sides must again give the same audio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import get_spec
from server.engine.mbd.decode import rows_to_audio
from server.models.convert import keys, xpcfg
from server.models.convert.audiocraft_export import read_package
from server.models.convert.mbd_checkpoint import MUSICGEN_FILE
from server.models.mbd import ensure_converted, load_folder

# The same float32 arithmetic in another torch build, through 4 bands x 20 denoising steps with
# clipping and two band-split equalisers: rounding only. Measured at most 3.0e-7 (peaks ~0.24) over
# the six runs on AMD Zen 4; a wrong step, a swapped tensor or noise drawn out of order moves the
# audio by ~1e-1.
AUDIO_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def project_tiny(tmp_path_factory) -> Path:
    """The checkpoint `models make-tiny` writes for the MBD entry."""
    from server.tiny.mbd import save_files

    out = tmp_path_factory.mktemp("project-mbd")
    save_files(out, seed=0)
    return out / MUSICGEN_FILE


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, project_tiny, oracle_venv) -> dict:
    out = tmp_path_factory.mktemp("oracle-mbd")
    oracle_venv.run("oracle_mbd.py", out, project_tiny)
    results = json.loads((out / "mbd" / "results.json").read_text())
    results["root"] = out / "mbd"
    return results


def _codec(export: Path):
    """The oracle's compression model in the engine's EnCodec class (the converter's own rules)."""
    from transformers import EncodecConfig, EncodecModel

    state, cfg = read_package(export / "compression_state_dict.bin")
    model = EncodecModel(EncodecConfig(**xpcfg.encodec_config_kwargs(cfg)))
    model.load_state_dict(keys.map_state(state, keys.CODEC_RULES), strict=True)
    return model.eval()


def _mbd(checkpoint: Path, tmp_path: Path):
    snapshot = tmp_path / "models--x--mbd" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (snapshot / MUSICGEN_FILE).symlink_to(checkpoint)
    return load_folder(get_spec("mbd-musicgen-32khz"), ensure_converted(snapshot), snapshot, torch.device("cpu"))


@pytest.mark.parametrize("who", ["oracle", "project"])
@pytest.mark.parametrize("run", ["mono", "stereo", "steps"])
def test_mbd_audio_is_audiocrafts(oracle, project_tiny, tmp_path, who, run):
    root = oracle["root"]
    record = oracle["runs"][f"{who}-{run}"]
    tokens = torch.from_numpy(np.load(root / record["tokens"]))
    want = np.load(root / record["audio"])[:, 0]
    checkpoint = Path(oracle["checkpoint"]) if who == "oracle" else project_tiny
    mbd = _mbd(checkpoint, tmp_path)
    got = rows_to_audio(_codec(Path(oracle["compression"])), mbd, tokens, record["steps"], record["seed"]).numpy()
    assert got.shape == want.shape == (tokens.shape[0], oracle["frames"] * 640)
    assert np.abs(want).std() > 1e-3  # real signal, not silence
    error = float(np.abs(got - want).max())
    assert error < AUDIO_TOLERANCE, f"max abs error {error:.3g}"
