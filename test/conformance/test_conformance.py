"""The engine against the audiocraft package itself (spec §4).

test/conformance/setup-env.sh installs audiocraft 1.3.0 with its pinned torch in a venv of its own
(cached outside the repo); oracle.py, run by that venv's python, builds tiny MusicGen and AudioGen
models with audiocraft's builders, saves them in audiocraft's export format and records greedy tokens
and decoded audio. Here, in the project's venv, the engine converts and loads those same files and
must give the same tokens, and the same audio within float rounding.

Skips only when the oracle environment cannot be created (no package registry); anything that goes
wrong after that fails.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_reference import generate_codes

from lib.catalogue import get_spec
from server.engine.decode import DecodeRequest, codes_to_audio
from server.models.convert.audiocraft_export import COMPRESSION_FILE, LM_FILE, convert_export
from server.models.musicgen import load_folder

# Audio from identical tokens: the same convolutions in another torch build; float32 rounding only.
AUDIO_TOLERANCE = 1e-5
SPECS = {"musicgen": "musicgen-small", "audiogen": "audiogen-medium"}
RUNS = [(name, i) for name in SPECS for i in range(2)]


@pytest.fixture(scope="session")
def oracle(oracle_venv, tmp_path_factory) -> dict:
    started = time.monotonic()
    out = tmp_path_factory.mktemp("oracle")
    oracle_venv.run("oracle.py", out)
    results = json.loads((out / "results.json").read_text())
    results["root"] = out
    results["env_s"], results["oracle_s"] = oracle_venv.setup_s, time.monotonic() - started
    return results


@pytest.fixture(scope="session")
def engine_models(oracle, tmp_path_factory) -> dict:
    """Each oracle export, converted and loaded by the engine's own code."""
    models = {}
    for name, spec_name in SPECS.items():
        entry = oracle["models"][name]
        folder = tmp_path_factory.mktemp(f"converted-{name}")
        convert_export(Path(entry["export"]), Path(entry["t5"]), folder)
        spec = get_spec(spec_name)
        models[name] = load_folder(spec, folder, folder, torch.device("cpu"), "float32", audiocraft=True)
    return models


def _run(oracle, name, i):
    run = oracle["models"][name]["runs"][i]
    root = oracle["root"]
    return run, np.load(root / run["tokens"]), np.load(root / run["audio"])


@pytest.mark.parametrize("name,i", RUNS)
def test_tokenizer_gives_the_oracles_ids(oracle, engine_models, name, i):
    run, _, _ = _run(oracle, name, i)
    assert engine_models[name].tokenizer([run["prompt"]]).input_ids[0] == run["input_ids"]


@pytest.mark.parametrize("name,i", RUNS)
def test_greedy_tokens_are_audiocrafts(oracle, engine_models, name, i):
    run, want, _ = _run(oracle, name, i)
    lm = engine_models[name]
    request = DecodeRequest(run["prompt"], want.shape[-1], seed=0, temperature=0.0, cfg_coef=oracle["cfg_coef"])
    got = generate_codes(lm, [request])[0].numpy()
    assert got.shape == want.shape == (4, round(oracle["duration_s"] * 50))
    mismatched = int((got != want).sum())
    assert mismatched == 0, f"{mismatched} of {want.size} tokens differ; first at {np.argwhere(got != want)[0]}"


@pytest.mark.parametrize("name,i", RUNS)
def test_decoded_audio_is_audiocrafts(oracle, engine_models, name, i):
    _, tokens, want = _run(oracle, name, i)
    lm = engine_models[name]
    got = codes_to_audio(lm, torch.from_numpy(tokens)).numpy()
    assert got.shape == want.shape == (1, round(oracle["duration_s"] * lm.sample_rate))
    assert np.abs(want).max() > 0.01  # real signal, not silence
    error = float(np.abs(got - want).max())
    assert error < AUDIO_TOLERANCE, f"max abs error {error:.3g}"


def test_tiny_writer_uses_audiocrafts_key_names(oracle, tmp_path):
    """`make-tiny` writes AudioGen without the audiocraft package: its keys must be the package's."""
    from server.tiny.audiocraft_export import save_export

    save_export(tmp_path, seed=0, text_width=32)
    export = Path(oracle["models"]["audiogen"]["export"])
    for file in (LM_FILE, COMPRESSION_FILE):
        ours = torch.load(tmp_path / file, weights_only=True)
        theirs = torch.load(export / file, weights_only=True)
        assert sorted(ours["best_state"]) == sorted(theirs["best_state"]), file
