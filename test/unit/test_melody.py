"""Melody conditioning and audio prompts in the engine's loop, against transformers' own generate(),
and the chroma extractor on synthesised tones. Tiny models loaded from disk by the real code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_reference import generate_codes
from transformers_reference import reference_generate

from lib.settings import Settings
from server.engine import delay
from server.engine.chroma import PITCH_CLASSES, chroma, chroma_filters, window_samples
from server.engine.decode import DecodeBatch, DecodeRequest, audio_to_codes
from server.models.registry import ModelRegistry

SR = 32000
N_FRAMES = 60


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    t = np.arange(round(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def reference_codes(lm, **generate_kwargs) -> torch.Tensor:
    return reference_generate(lm, **generate_kwargs)[0]


def steps_for(lm, n_frames: int) -> int:
    return delay.num_steps(n_frames, delay.codebook_delays(lm.num_codebooks, lm.stereo))


# -- chroma ----------------------------------------------------------------------------------------


def test_filter_bank_is_the_reference_one():
    from transformers.audio_utils import chroma_filter_bank

    want = chroma_filter_bank(num_frequency_bins=2**14, num_chroma=12, sampling_rate=SR, tuning=0)
    got = chroma_filters(SR, 2**14, 12)
    assert got.shape == (12, 2**13 + 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_c_major_scale_gives_its_pitch_classes_in_order():
    notes_hz = [261.63, 293.66, 329.63, 349.23, 392.00, 440.00, 493.88, 523.25]  # C4 D4 E4 F4 G4 A4 B4 C5
    scale = np.concatenate([tone(f, 1.0) for f in notes_hz])
    bins = chroma(scale).argmax(dim=1).numpy()
    frames_per_note = SR / 4096
    # The frame nearest each note's middle (frames straddling two notes are ambiguous by nature).
    middles = [bins[round((i + 0.5) * frames_per_note)] for i in range(len(notes_hz))]
    assert [PITCH_CLASSES[b] for b in middles] == ["C", "D", "E", "F", "G", "A", "B", "C"]


def test_thirty_seconds_give_235_one_hot_frames():
    c = chroma(tone(440.0, 30.0))
    assert c.shape == (235, 12)
    assert torch.equal(c.sum(dim=1), torch.ones(235))
    assert PITCH_CLASSES[int(c[100].argmax())] == "A"
    assert chroma(tone(440.0, 0.1)).shape == (1 + 2**14 // 4096, 12)  # shorter than n_fft: padded to it


def test_melody_windows_wrap_around():
    melody = np.arange(10, dtype=np.float32)
    assert window_samples(melody, 7, 6).tolist() == [7, 8, 9, 0, 1, 2]


# -- token identity with transformers --------------------------------------------------------------


@pytest.mark.parametrize("name", ["musicgen-melody", "musicgen-stereo-melody"])
@pytest.mark.parametrize("cfg_coef", [3.0, 1.0])
def test_melody_greedy_is_token_identical_to_transformers(registry, name, cfg_coef):
    lm = registry.get(name)
    t = np.arange(SR * 3) / SR
    melody = chroma(0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 3)))  # a glide: the chroma changes
    prompt = "upbeat electronic music"
    inputs = lm.tokenizer([prompt], return_tensors="pt")
    want = reference_codes(
        lm, **inputs, input_features=melody[None], guidance_scale=cfg_coef, max_new_tokens=steps_for(lm, N_FRAMES)
    )
    request = DecodeRequest(prompt, N_FRAMES, seed=0, temperature=0.0, cfg_coef=cfg_coef, chroma=melody)
    got = generate_codes(lm, [request])[0]
    assert got.shape == (lm.num_codebooks, N_FRAMES)
    assert torch.equal(got, want)


def test_melody_model_without_a_melody_matches_transformers(registry):
    lm = registry.get("musicgen-melody")
    inputs = lm.tokenizer(["rock"], return_tensors="pt")
    want = reference_codes(lm, **inputs, guidance_scale=3.0, max_new_tokens=steps_for(lm, N_FRAMES))
    got = generate_codes(lm, [DecodeRequest("rock", N_FRAMES, seed=0, temperature=0.0)])[0]
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small"])
def test_audio_prompt_continuation_is_token_identical_to_transformers(registry, name):
    lm = registry.get(name)
    audio = 0.2 * torch.randn(lm.channels, SR + 123, generator=torch.Generator().manual_seed(1))
    codes = audio_to_codes(lm, audio)
    n_prompt = codes.shape[1]
    assert n_prompt == 51  # 32123 samples: 50.2 frames, the encoder pads to 51
    new = 40
    prompt = "upbeat electronic music"
    inputs = lm.tokenizer([prompt], return_tensors="pt")
    steps = new + steps_for(lm, 0)
    want = reference_codes(lm, **inputs, input_values=audio[None], guidance_scale=3.0, max_new_tokens=steps)
    request = DecodeRequest(prompt, n_prompt + new, seed=0, temperature=0.0, prompt_codes=codes)
    got = generate_codes(lm, [request])[0]
    assert torch.equal(got[:, :n_prompt], codes)
    assert torch.equal(got, want)


def test_melody_with_audio_prompt_matches_transformers(registry):
    lm = registry.get("musicgen-melody")
    audio = 0.2 * torch.randn(1, SR, generator=torch.Generator().manual_seed(2))
    codes = audio_to_codes(lm, audio)
    melody = chroma(tone(330.0, 2.0))
    inputs = lm.tokenizer(["jazz"], return_tensors="pt")
    want = reference_codes(
        lm, **inputs, input_features=melody[None], decoder_input_ids=codes.reshape(-1, codes.shape[1]),
        guidance_scale=3.0, max_new_tokens=30 + 3,
    )  # fmt: skip
    request = DecodeRequest("jazz", codes.shape[1] + 30, seed=0, temperature=0.0, prompt_codes=codes, chroma=melody)
    assert torch.equal(generate_codes(lm, [request])[0], want)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8", "int8-dynamic"])
def test_prefixed_requests_join_a_running_batch_unchanged(tiny_hub, precision):
    """A melody or prompted request prefills on its own as it joins; the batch does not change it, nor
    does it change the others, in every precision."""
    lm = ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype=precision)).get("musicgen-stereo-melody")
    codes = audio_to_codes(lm, 0.2 * torch.randn(2, SR // 2, generator=torch.Generator().manual_seed(3)))
    plain = DecodeRequest("drums", 40, seed=1)
    melodic = DecodeRequest("pads", 35, seed=2, top_p=0.9, chroma=chroma(tone(262.0, 1.0)))
    prompted = DecodeRequest("bass", codes.shape[1] + 20, seed=3, cfg_coef=1.0, prompt_codes=codes)
    want = {r.seed: generate_codes(lm, [r])[0] for r in (plain, melodic, prompted)}
    batch = DecodeBatch(lm)
    handles = {batch.add(plain): plain.seed}
    for _ in range(5):
        batch.step()
    handles[batch.add(melodic)] = melodic.seed
    batch.step()
    handles[batch.add(prompted)] = prompted.seed
    got = {}
    while len(batch):
        for h in batch.step():
            got[handles[h]] = batch.pop(h)
    assert got.keys() == want.keys()
    for seed, codes_ in want.items():
        assert torch.equal(got[seed], codes_), seed
