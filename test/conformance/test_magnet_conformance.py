"""MAGNeT against the audiocraft package (spec §4): oracle_magnet.py, in the oracle's venv, builds tiny
MAGNeT models with audiocraft's builders, exports them, and records `MAGNeT.generate` with its default
schedule (20, 10, 10, 10 iterations, cosine masking, spans of 3, annealed temperature and guidance)
and with the request's overrides: greedy, top-p and top-k sampling (every random draw recorded),
overlapping spans, other guidance and step counts. Here the engine converts and loads the same files
and must give the same tokens: exactly, for every run (greedy ones as they are; sampled ones given the
oracle's draws, since torch 2.1 and this torch draw other numbers from the same seed). The audio from
those tokens matches within float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import get_spec
from server.engine.decode import codes_to_audio
from server.engine.magnet import MagnetBatch, MagnetParams, MagnetRequest
from server.models.convert.audiocraft_export import convert_export
from server.models.magnet import load_converted

AUDIO_TOLERANCE = 1e-5  # the same convolutions in another torch build: float32 rounding only
SPECS = {"magnet": "magnet-small-10secs", "audio-magnet": "audio-magnet-small"}
N_RUNS = 10  # oracle_magnet.RUNS (5) x its 2 prompts
CASES = [(name, i) for name in SPECS for i in range(N_RUNS)]


@pytest.fixture(scope="session")
def magnet_oracle(oracle_venv, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("oracle-magnet")
    oracle_venv.run("oracle_magnet.py", out)
    results = json.loads((out / "magnet.json").read_text())
    results["root"] = out
    return results


@pytest.fixture(scope="session")
def magnet_models(magnet_oracle, tmp_path_factory) -> dict:
    models = {}
    for name, spec_name in SPECS.items():
        entry = magnet_oracle["models"][name]
        folder = tmp_path_factory.mktemp(f"converted-{name}")
        convert_export(Path(entry["export"]), Path(entry["t5"]), folder)
        models[name] = load_converted(get_spec(spec_name), folder, folder, torch.device("cpu"), "float32")
    return models


def _params(defaults: dict) -> MagnetParams:
    """audiocraft's generation_params of the run (its defaults with the run's overrides)."""
    return MagnetParams(
        use_sampling=defaults["use_sampling"],
        temperature=defaults["temp"],
        top_k=defaults["top_k"],
        top_p=defaults["top_p"],
        max_cfg_coef=defaults["max_cfg_coef"],
        min_cfg_coef=defaults["min_cfg_coef"],
        decoding_steps=tuple(defaults["decoding_steps"]),
        span_arrangement=defaults["span_arrangement"],
    )


def _replay(draws: np.ndarray):
    """The oracle's exponential draws, handed out in the order it made them."""
    queue = iter(torch.from_numpy(draws))

    def noise(shape):
        q = next(queue)
        assert tuple(q.shape) == shape, f"the engine draws {shape} where audiocraft drew {tuple(q.shape)}"
        return q

    return noise


def _generate(lm, run: dict, root: Path, segment_frames: int) -> np.ndarray:
    noise = _replay(np.load(root / run["draws"])) if run["draws"] else None
    batch = MagnetBatch(lm)
    handle = batch.add(
        MagnetRequest(run["prompt"], segment_frames, seed=run["seed"], params=_params(run["defaults"]), noise=noise)
    )
    while len(batch):
        batch.step()
    return batch.pop(handle).numpy()


def test_the_defaults_are_audiocrafts(magnet_oracle):
    """MagnetParams() is MAGNeT.set_generation_params() with no arguments."""
    run = next(r for r in magnet_oracle["models"]["magnet"]["runs"] if r["run"] == "top_p")
    assert _params(run["defaults"]) == MagnetParams()


@pytest.mark.parametrize("name,i", CASES)
def test_tokens_are_audiocrafts(magnet_oracle, magnet_models, name, i):
    run = magnet_oracle["models"][name]["runs"][i]
    root = magnet_oracle["root"]
    lm = magnet_models[name]
    assert lm.tokenizer([run["prompt"]]).input_ids[0] == run["input_ids"]
    want = np.load(root / run["tokens"])
    got = _generate(lm, run, root, round(magnet_oracle["segment_s"] * lm.frame_rate_hz))
    assert got.shape == want.shape
    mismatched = int((got != want).sum())
    assert mismatched == 0, f"{run['run']}: {mismatched} of {want.size} tokens differ"


@pytest.mark.parametrize("name", SPECS)
def test_audio_is_audiocrafts(magnet_oracle, magnet_models, name):
    run = magnet_oracle["models"][name]["runs"][0]
    root = magnet_oracle["root"]
    lm = magnet_models[name]
    tokens, want = np.load(root / run["tokens"]), np.load(root / run["audio"])
    got = codes_to_audio(lm, torch.from_numpy(tokens)).numpy()
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.01
    assert float(np.abs(got - want).max()) < AUDIO_TOLERANCE


def test_batched_requests_keep_their_tokens(magnet_oracle, magnet_models):
    """Runs joined into one batch, one of them two iterations late, give each its own tokens."""
    root = magnet_oracle["root"]
    lm = magnet_models["magnet"]
    runs = magnet_oracle["models"]["magnet"]["runs"][:4]  # greedy and top-p, both prompts
    frames = round(magnet_oracle["segment_s"] * lm.frame_rate_hz)
    batch = MagnetBatch(lm)
    handles = {}
    for j, run in enumerate(runs):
        noise = _replay(np.load(root / run["draws"])) if run["draws"] else None
        request = MagnetRequest(run["prompt"], frames, seed=run["seed"], params=_params(run["defaults"]), noise=noise)
        if j == len(runs) - 1:
            batch.step()
            batch.step()
        handles[batch.add(request)] = run
    done = {}
    while len(batch):
        for handle in batch.step():
            done[handle] = batch.pop(handle).numpy()
    for handle, run in handles.items():
        assert np.array_equal(done[handle], np.load(root / run["tokens"])), run["run"]
