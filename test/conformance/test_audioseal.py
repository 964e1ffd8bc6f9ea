"""The watermark engine against the audioseal package (0.2.0) on the same tiny checkpoints.

The project's tiny writer puts AudioSeal's published files in a hub cache; audioseal_oracle.py, run
by the oracle venv's python with audioseal on PYTHONPATH (setup-audioseal.sh), loads them with
audioseal's own loader and records its generator's watermark and its detector's outputs on fixed
signals. Here the engine converts and loads the same files and must give the same numbers within
float32 rounding. Random weights detect nothing meaningful, so the check is that the modules compute
what audioseal's compute; with the real weights they then mark and detect as AudioSeal does.

Skips only when the oracle environment cannot be created (no package registry).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import get_spec
from server.engine import watermark
from server.hub import store
from server.models.audioseal import load_audioseal
from server.tiny.write import write_tiny_models

HERE = Path(__file__).resolve().parent
# The same convolutions and LSTMs in another torch build: float32 rounding only.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def pair(tmp_path_factory, oracle_environ):
    """(audioseal's results, the engine's loaded model) on one tiny snapshot."""
    setup = subprocess.run(
        ["bash", str(HERE / "setup-audioseal.sh")], capture_output=True, text=True, timeout=3600, env=oracle_environ
    )
    if setup.returncode != 0:
        tail = "\n".join(setup.stderr.strip().splitlines()[-15:])
        pytest.skip(
            f"the audioseal oracle could not be installed (setup-audioseal.sh exit {setup.returncode}):\n{tail}"
        )
    python, site = setup.stdout.strip().splitlines()[-2:]
    hub = tmp_path_factory.mktemp("hub")
    write_tiny_models(hub, ["audioseal"])
    spec = get_spec("audioseal")
    snapshot = store.snapshot_dir(spec, hub)
    out = tmp_path_factory.mktemp("audioseal-oracle")
    run = subprocess.run(
        [python, str(HERE / "audioseal_oracle.py"), str(snapshot), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=oracle_environ | {"PYTHONPATH": site},
    )
    assert run.returncode == 0, f"audioseal_oracle.py failed:\n{run.stderr[-4000:]}"
    results = dict(np.load(out / "audioseal.npz"))
    results["legacy"] = out / "legacy"
    return results, load_audioseal(spec, snapshot, torch.device("cpu"), "float32")


def test_the_watermark_is_audioseals(pair):
    want, model = pair
    audio, bits = torch.from_numpy(want["audio"])[:, None, :], torch.from_numpy(want["bits"])
    with torch.no_grad():
        got = model.generator(audio, bits)[:, 0].numpy()
    assert got.shape == want["mark"].shape
    assert np.abs(want["mark"]).max() > 1e-3  # a mark, not silence
    np.testing.assert_allclose(got, want["mark"], atol=TOLERANCE, rtol=0)


def test_embedding_at_16khz_adds_audioseals_mark(pair):
    """embed() at the model's own rate: no resampling, one piece, so exactly audioseal's x + mark."""
    want, model = pair
    for row, message in enumerate((0xBEEF, 0x1234)):
        got = watermark.embed(model.generator, want["audio"][row : row + 1], watermark.SAMPLE_RATE, message)
        np.testing.assert_allclose(got[0], want["marked"][row], atol=TOLERANCE, rtol=0)


def test_the_detector_is_audioseals(pair):
    want, model = pair
    marked = torch.from_numpy(want["marked"])[:, None, :]
    with torch.no_grad():
        probability, summed = model.detector(marked)
    np.testing.assert_allclose(probability.numpy(), want["probability"], atol=TOLERANCE, rtol=0)
    message = torch.sigmoid(summed / marked.shape[-1]).numpy()
    np.testing.assert_allclose(message, want["message"], atol=TOLERANCE, rtol=0)


def test_detect_reports_audioseals_score_and_message(pair):
    want, model = pair
    found = watermark.detect(model.detector, want["marked"], watermark.SAMPLE_RATE)
    scores = [d.score for d in found]
    # A sample whose probability is within rounding of the threshold may fall either side.
    np.testing.assert_allclose(scores, want["score"], atol=5 / want["marked"].shape[-1], rtol=0)
    near = np.abs(want["message"] - watermark.MESSAGE_THRESHOLD) < 1e-4
    for d, bits, close in zip(found, want["decoded"], near, strict=True):
        assert [b for b, c in zip(d.bits, close, strict=True) if not c] == [
            int(b) for b, c in zip(bits, close, strict=True) if not c
        ]


def test_a_training_runs_checkpoints_convert_alike(pair, tmp_path):
    """weight_g / weight_v and an OmegaConf DictConfig (with references into the run's config), as a
    training run saves them: the same modules as from the published form."""
    from server.models.convert.audioseal import convert_snapshot
    from server.models.convert.omegaconf_pickle import load

    want, _ = pair
    pkg = load(want["legacy"] / "generator_base.pth")
    assert type(pkg["xp.cfg"]["seanet"]).__name__ == "_Container"  # a real DictConfig pickle, read with stand-ins
    assert any(k.endswith(".weight_g") for k in pkg["model"])
    convert_snapshot(want["legacy"], tmp_path / "converted")
    legacy = load_audioseal(get_spec("audioseal"), want["legacy"], torch.device("cpu"), "float32")
    audio, bits = torch.from_numpy(want["audio"])[:, None, :], torch.from_numpy(want["bits"])
    with torch.no_grad():
        np.testing.assert_allclose(legacy.generator(audio, bits)[:, 0].numpy(), want["mark"], atol=TOLERANCE, rtol=0)
        probability, _ = legacy.detector(torch.from_numpy(want["marked"])[:, None, :])
    np.testing.assert_allclose(probability.numpy(), want["probability"], atol=TOLERANCE, rtol=0)
