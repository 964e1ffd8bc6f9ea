"""MusicGen-Style against the audiocraft package: oracle_style.py, in the oracle's venv, builds a tiny
style model and records its style tokens and greedy tokens; here the engine converts and loads the same
files (the export, the T5 repo, the MERT repo) and must give the same style codes exactly, the same
style tokens within float rounding, and the same greedy tokens exactly.

What the oracle covers, and what it cannot:
- audiocraft 1.3.0, the newest release on PyPI, predates MusicGen-Style: it has no StyleConditioner
  and its builders refuse `model: style`. The oracle's conditioner is assembled from 1.3.0's own
  StreamingTransformer, ResidualVectorQuantizer and convert_audio (julius), torch's BatchNorm1d and
  Linear, wired as the upstream StyleConditioner wires them (read from audiocraft's repository, not
  run). It sits as `self_wav` inside the LMModel 1.3.0's builders make for style2music's fuser
  (prepend [self_wav, description]), so tokenizing, collating, the null condition of classifier-free
  guidance, the prefix order and the greedy loop are 1.3.0's own, fed by that conditioner.
- MERT is transformers' HubertModel on both sides (4.49 there, 5.x here), in MERT-v1-95M's file layout
  (a MERTConfig config.json, pytorch_model.bin with the old weight-norm names): what is checked is the
  strict mapping of that layout onto HubertModel, not MERT's own remote code, which no package holds.
- The excerpt is taken from the middle (use_middle_of_segment): audiocraft's other choice draws the
  start from Python's global random, which no seed here reproduces.
- Widths are tiny (MERT 32 wide instead of 768, the conditioner's xsmall scale, 64 bins); the real
  model's shapes are benchmarked in bench/style.py, not checked here.
- Double classifier-free guidance (cfg_coef_beta) is newer than 1.3.0 too: the oracle puts upstream's
  (the text-dropped conditions between the conditions and the null ones; upstream's combination of
  the three rows' logits) into 1.3.0's generate, whose conditioning and loop then run as they are.
  What is compared is the engine against that reading of upstream, not against a release.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import get_spec
from server.engine.decode import DecodeBatch
from server.engine.text_to_audio import AudioRequest, LongForm
from server.models.convert.audiocraft_export import convert_export
from server.models.style import load_converted

STATE_TOLERANCE = 1e-4  # MERT and the encoder in another torch build: float32 rounding only


@pytest.fixture(scope="session")
def style_oracle(oracle_venv, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("oracle-style")
    oracle_venv.run("oracle_style.py", out)
    results = json.loads((out / "style.json").read_text())
    results["root"] = out
    return results


@pytest.fixture(scope="session")
def style_lm(style_oracle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("converted-style")
    o = style_oracle
    convert_export(Path(o["export"]), Path(o["t5"]), folder, Path(o["mert"]))
    return load_converted(get_spec("musicgen-style"), folder, folder, torch.device("cpu"), "float32")


def _plan(lm, oracle: dict, run: dict) -> LongForm:
    audio = np.load(oracle["root"] / oracle["audio"]) if run["style"] else None
    item = AudioRequest(
        prompt=run["prompt"] or "",
        duration_s=oracle["duration_s"],
        seed=0,
        top_k=1,
        cfg_coef=oracle["cfg_coef"],
        style=audio,
        style_excerpt_s=run["excerpt_s"],
        style_eval_q=run["eval_q"],
        cfg_coef_beta=run["cfg_coef_beta"],
    )
    return LongForm(lm, item, stride_s=18.0)


N_RUNS = 7  # oracle_style.RUNS


@pytest.mark.parametrize("index", range(N_RUNS))
def test_style_tokens_match_audiocraft(style_oracle, style_lm, index):
    run = style_oracle["runs"][index]
    plan = _plan(style_lm, style_oracle, run)
    want = np.load(style_oracle["root"] / run["states"])
    got = plan.style.states.numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=STATE_TOLERANCE, rtol=0)
    if run["codes"]:
        np.testing.assert_array_equal(plan.style.codes.numpy(), np.load(style_oracle["root"] / run["codes"]))
    else:
        assert not got.any(), "no style audio is AudioCraft's empty condition: one zero token"


@pytest.mark.parametrize("index", range(N_RUNS))
def test_greedy_tokens_match_audiocraft(style_oracle, style_lm, index):
    run = style_oracle["runs"][index]
    plan = _plan(style_lm, style_oracle, run)
    batch = DecodeBatch(style_lm)
    handle = batch.add(plan.request())
    while handle not in batch.finished():
        batch.step()
    tokens = batch.pop(handle).numpy()
    np.testing.assert_array_equal(tokens, np.load(style_oracle["root"] / run["tokens"]))
