"""Melody stems against AudioCraft's ChromaStemConditioner and demucs 4.1 themselves.

The project writes its tiny htdemucs in both published layouts (the hub's safetensors, demucs' legacy
.th pickle); oracle_stems.py, in the oracle's venv, loads them with demucs' own code and runs
`apply_model` and ChromaStemConditioner (AudioCraft 1.3.0) on a melody with a fixed `random` seed.
Here the project's loader and engine must give the same stems, the same vocals + other mix and the
same chroma from the same files and seed.

Tolerance: stems and their mix within STEM_TOLERANCE absolute (the signal peaks near 0.05; the same
convolutions, FFTs and attention in another torch build differ in float32 rounding only, ~4e-8
here); the one-hot chroma identical. Skips only when the oracle environment cannot be created.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import HTDEMUCS
from server.engine.chroma import chroma
from server.engine.stems import melody_stems, separate
from server.models.demucs import load_demucs
from server.tiny import demucs as tiny

SR = 32000
STEM_TOLERANCE = 1e-5


def melody(seconds: float = 2.5) -> np.ndarray:
    """Two held notes over a decaying 55 Hz kick every half second: drums and bass that pull a full-mix chroma."""
    t = np.arange(int(seconds * SR)) / SR
    notes = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    kick = 0.3 * np.sin(2 * np.pi * 55 * t) * np.exp(-8 * (t % 0.5))
    return (notes + kick).astype(np.float32)


@pytest.fixture(scope="module")
def stems_oracle(tmp_path_factory, oracle_venv) -> dict:
    root = tmp_path_factory.mktemp("stems")
    model = tiny.build(tiny.TINY_KWARGS, seed=7)
    tiny.save_hub_files(root / "model" / "hub", model, tiny.TINY_KWARGS)
    legacy = root / "model" / "legacy"
    legacy.mkdir()
    (legacy / "htdemucs.yaml").write_text((root / "model" / "hub" / "htdemucs.yaml").read_text())
    tiny.save_th(legacy, model, tiny.TINY_KWARGS)
    out = root / "oracle"
    out.mkdir()
    np.save(out / "melody.npy", melody())

    oracle_venv.run("oracle_stems.py", out, root / "model")
    results = json.loads((out / "stems.json").read_text())
    results["out"], results["model"] = out, root / "model"
    return results


@pytest.fixture(scope="module", params=["hub", "legacy"])
def bag(request, stems_oracle):
    """The tiny htdemucs as the project loads it, from each published layout."""
    return load_demucs(HTDEMUCS, stems_oracle["model"] / request.param, torch.device("cpu"), "float32").model


def test_both_layouts_load_the_same_model_in_demucs(stems_oracle):
    assert stems_oracle["demucs"] == "4.1.0"
    assert stems_oracle["layouts_agree"]


def test_the_conditioner_keeps_vocals_and_other(stems_oracle, bag):
    from server.engine.stems import stem_indices

    assert stems_oracle["sources"] == list(bag.sources)
    assert stem_indices(list(bag.sources)) == stems_oracle["stem_indices"]


def test_separation_is_apply_models(stems_oracle, bag):
    from demucs.audio import convert_audio

    wav = convert_audio(torch.from_numpy(melody())[None, None], SR, bag.samplerate, bag.audio_channels)
    got = separate(bag, wav, stems_oracle["shift_seed"])[0].numpy()
    want = np.load(stems_oracle["out"] / "stems.npy")
    assert got.shape == want.shape == (4, 2, round(2.5 * 44100))
    assert np.abs(want).max() > 0.01  # real signal
    error = float(np.abs(got - want).max())
    assert error < STEM_TOLERANCE, f"max abs error {error:.3g}"


def test_another_seed_shifts_differently(stems_oracle, bag):
    """The shift matters (so the seed is what makes it reproducible): another seed, other stems."""
    got = melody_stems(bag, melody(), SR, stems_oracle["shift_seed"] + 1).numpy()
    want = np.load(stems_oracle["out"] / "stem_mix.npy")
    assert float(np.abs(got - want).max()) > 100 * STEM_TOLERANCE


def test_stem_mix_and_chroma_are_the_conditioners(stems_oracle, bag):
    got = melody_stems(bag, melody(), SR, stems_oracle["shift_seed"]).numpy()
    want = np.load(stems_oracle["out"] / "stem_mix.npy")
    assert got.shape == want.shape == (round(2.5 * SR),)
    error = float(np.abs(got - want).max())
    assert error < STEM_TOLERANCE, f"max abs error {error:.3g}"
    ours = chroma(got, SR).numpy()
    theirs = np.load(stems_oracle["out"] / "stem_chroma.npy")
    assert ours.shape == theirs.shape == (1 + round(2.5 * SR) // 4096, 12)
    np.testing.assert_array_equal(ours, theirs)


def test_stems_change_the_chroma(stems_oracle):
    """The full mix's chroma (today's melody_stems=false) is the conditioner's without stems, and
    differs from the stems' one on this melody."""
    full = chroma(melody(), SR).numpy()
    np.testing.assert_array_equal(full, np.load(stems_oracle["out"] / "full_chroma.npy"))
    stems = np.load(stems_oracle["out"] / "stem_chroma.npy")
    assert (full.argmax(1) != stems.argmax(1)).any()


@pytest.fixture(scope="module")
def melody_lm(tmp_path_factory):
    from lib.settings import Settings
    from server.models.registry import ModelRegistry
    from server.tiny.write import write_tiny_models

    hub = tmp_path_factory.mktemp("melody-hub")
    write_tiny_models(hub, names=["musicgen-melody"])
    return ModelRegistry(Settings(models_dir=hub, device="cpu", dtype="float32")).get("musicgen-melody")


def test_greedy_tokens_from_the_stems_are_those_of_the_conditioners_chroma(stems_oracle, bag, melody_lm):
    """The engine's greedy tokens from its own stems chroma are transformers' MusicgenMelody
    generate() given the conditioner's chroma (the melody model the project runs, as
    test/unit/test_melody.py checks it for the full mix)."""
    from engine_reference import generate_codes
    from transformers_reference import reference_generate

    from server.engine import delay
    from server.engine.decode import DecodeRequest

    n_frames = 40
    ours = chroma(melody_stems(bag, melody(), SR, stems_oracle["shift_seed"]), SR)
    theirs = torch.from_numpy(np.load(stems_oracle["out"] / "stem_chroma.npy"))
    inputs = melody_lm.tokenizer(["jazz"], return_tensors="pt")
    steps = delay.num_steps(n_frames, delay.codebook_delays(melody_lm.num_codebooks, melody_lm.stereo))
    want, _ = reference_generate(
        melody_lm, **inputs, input_features=theirs[None], guidance_scale=3.0, max_new_tokens=steps
    )  # fmt: skip
    got = generate_codes(melody_lm, [DecodeRequest("jazz", n_frames, seed=0, temperature=0.0, chroma=ours)])[0]
    assert got.shape == want.shape == (4, n_frames)
    assert torch.equal(got, want)


@pytest.fixture(scope="module")
def audiocraft_melody_lm(stems_oracle, tmp_path_factory):
    """The oracle's MusicGen-Melody export, converted and loaded by the engine's own code."""
    from lib.catalogue import get_spec
    from server.models.convert.audiocraft_export import convert_export
    from server.models.musicgen import load_folder

    entry = stems_oracle["melody_model"]
    folder = tmp_path_factory.mktemp("converted-melody")
    convert_export(Path(entry["export"]), Path(entry["t5"]), folder)
    spec = get_spec("musicgen-melody")
    return load_folder(spec, folder, folder, torch.device("cpu"), "float32", audiocraft=True)


def test_the_melody_export_converts_to_musicgen_melody(stems_oracle, audiocraft_melody_lm):
    entry = stems_oracle["melody_model"]
    assert audiocraft_melody_lm.melody
    assert audiocraft_melody_lm.model.config.chroma_length == 235
    assert audiocraft_melody_lm.tokenizer([entry["prompt"]]).input_ids[0] == entry["input_ids"]


def test_greedy_tokens_are_audiocrafts_melody_models(stems_oracle, bag, audiocraft_melody_lm):
    """AudioCraft's MusicGen.generate_with_chroma (its ChromaStemConditioner running htdemucs) against
    the service's path on the same files: melody -> stems -> chroma -> the engine's decode loop."""
    from engine_reference import generate_codes

    from server.engine.decode import DecodeRequest

    entry = stems_oracle["melody_model"]
    want = np.load(stems_oracle["out"] / entry["tokens"])
    mix = melody_stems(bag, melody(), SR, stems_oracle["shift_seed"])
    request = DecodeRequest(
        entry["prompt"], want.shape[-1], seed=0, temperature=0.0, cfg_coef=entry["cfg_coef"], chroma=chroma(mix, SR)
    )
    got = generate_codes(audiocraft_melody_lm, [request])[0].numpy()
    assert got.shape == want.shape == (4, round(entry["duration_s"] * 50))
    mismatched = int((got != want).sum())
    assert mismatched == 0, f"{mismatched} of {want.size} tokens differ; first at {np.argwhere(got != want)[0]}"


def test_thirty_seconds_are_235_frames(stems_oracle):
    assert stems_oracle["chroma_len"] == 235
    assert chroma(np.zeros(30 * SR, dtype=np.float32), SR).shape == (235, 12)
