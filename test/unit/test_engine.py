"""The engine's decode loop against transformers' own generate(), on tiny models loaded from disk."""

from __future__ import annotations

import pytest
import torch
from engine_reference import Cancelled, generate_codes, sample
from transformers_reference import reference_generate

from lib.catalogue import get_spec
from lib.settings import Settings
from server.engine import delay
from server.engine.decode import DecodeRequest, codes_to_audio
from server.models.registry import ModelRegistry

N_FRAMES = 60  # 1.2 s at 50 Hz: long enough for the delay pattern to matter, short for CPU


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


def transformers_greedy(lm, prompt: str, n_frames: int, cfg_coef: float):
    """Reference tokens and audio from MusicgenForConditionalGeneration.generate (greedy)."""
    inputs = lm.tokenizer([prompt], return_tensors="pt")
    steps = delay.num_steps(n_frames, delay.codebook_delays(lm.num_codebooks, lm.stereo))
    return reference_generate(lm, **inputs, guidance_scale=cfg_coef, max_new_tokens=steps)


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small", "audiogen-medium"])
@pytest.mark.parametrize("prompt", ["upbeat electronic music", "calm piano with soft strings, 90 bpm"])
def test_greedy_is_token_identical_to_transformers(registry, name, prompt):
    lm = registry.get(name)
    want_codes, want_audio = transformers_greedy(lm, prompt, N_FRAMES, cfg_coef=3.0)
    got = generate_codes(lm, [DecodeRequest(prompt, N_FRAMES, seed=0, temperature=0.0, cfg_coef=3.0)])[0]
    assert got.shape == (lm.num_codebooks, N_FRAMES)
    assert torch.equal(got, want_codes)
    audio = codes_to_audio(lm, got)
    assert audio.shape == (2 if lm.stereo else 1, N_FRAMES * lm.model.config.audio_encoder.hop_length)
    assert torch.equal(audio, want_audio)


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small", "audiogen-medium"])
def test_greedy_matches_without_guidance(registry, name):
    lm = registry.get(name)
    want_codes, _ = transformers_greedy(lm, "rock", N_FRAMES, cfg_coef=1.0)
    got = generate_codes(lm, [DecodeRequest("rock", N_FRAMES, seed=0, temperature=0.0, cfg_coef=1.0)])[0]
    assert torch.equal(got, want_codes)


def test_guidance_off_runs_one_row_per_request(registry, monkeypatch):
    """cfg_coef 1 has no null condition to run: its request takes one row of the decoder, a guided
    one two, alone or batched together."""
    from server.engine.decode import DecodeBatch

    lm = registry.get("musicgen-small")
    batch = DecodeBatch(lm)
    rows = []
    real = batch.fast.step
    monkeypatch.setattr(batch.fast, "step", lambda tokens, *a: rows.append(tokens.shape[0]) or real(tokens, *a))
    batch.add(DecodeRequest("rock", 8, seed=0, cfg_coef=1.0))
    batch.step()
    batch.add(DecodeRequest("jazz", 8, seed=1, cfg_coef=3.0))
    batch.step()
    assert rows == [1, 3]


def test_batching_does_not_change_a_request(registry):
    lm = registry.get("musicgen-small")
    mine = DecodeRequest("lofi hip hop beat", N_FRAMES, seed=1234, temperature=1.0, top_k=250)
    alone = generate_codes(lm, [mine])[0]
    others = [
        DecodeRequest("a much longer prompt about an orchestra playing a dramatic film score", 90, seed=7),
        DecodeRequest("jazz", 20, seed=99, temperature=0.7, top_p=0.9, cfg_coef=5.0),
        DecodeRequest("drums", 40, seed=5, temperature=0.0, cfg_coef=1.0),
    ]
    for batch in ([mine, *others], [others[0], mine], [others[1], others[2], mine]):
        assert torch.equal(generate_codes(lm, batch)[batch.index(mine)], alone)


def test_seed_reproduces_and_differs(registry):
    lm = registry.get("musicgen-small")
    a = generate_codes(lm, [DecodeRequest("ambient pads", N_FRAMES, seed=42)])[0]
    b = generate_codes(lm, [DecodeRequest("ambient pads", N_FRAMES, seed=42)])[0]
    c = generate_codes(lm, [DecodeRequest("ambient pads", N_FRAMES, seed=43)])[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_progress_and_cancellation(registry):
    lm = registry.get("musicgen-small")
    steps: list[tuple[int, int]] = []
    generate_codes(lm, [DecodeRequest("x", 10, seed=0)], on_step=lambda s, t: steps.append((s, t)))
    assert steps == [(s, 13) for s in range(1, 14)]  # 10 frames + 3 delay steps

    seen = []

    def cancel_after_five(i: int) -> bool:
        seen.append(i)
        return len(seen) > 5

    with pytest.raises(Cancelled):
        generate_codes(lm, [DecodeRequest("x", 200, seed=0)], is_cancelled=cancel_after_five)
    assert len(seen) == 6  # stopped at the step after the flag, not at the end


def test_cancel_one_request_keeps_the_other(registry):
    lm = registry.get("musicgen-small")
    keep = DecodeRequest("keep me", 30, seed=3)
    alone = generate_codes(lm, [keep])[0]
    out = generate_codes(lm, [keep, DecodeRequest("drop me", 30, seed=4)], is_cancelled=lambda i: i == 1)
    assert out[1] is None
    assert torch.equal(out[0], alone)


def test_delay_pattern_positions():
    delays = delay.codebook_delays(4, stereo=False)
    keep = delay.valid_positions(torch.tensor([3]), delays, 7)[0].int().tolist()
    assert keep == [
        [0, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 1, 1, 1],
    ]
    assert delay.codebook_delays(8, stereo=True).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert delay.num_steps(1500, delays) == 1503


def test_sampling_rules():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    assert sample(logits, 0.0, 250, 0.0, None).tolist() == [2]
    g = torch.Generator().manual_seed(0)
    draws = {sample(logits, 1.0, 1, 0.0, g).item() for _ in range(50)}
    assert draws == {2}  # top_k 1 is argmax
    draws = {sample(logits, 1.0, 2, 0.0, g).item() for _ in range(200)}
    assert draws == {2, 3}
    draws = {sample(logits, 1.0, 0, 0.5, g).item() for _ in range(50)}
    assert draws == {2}  # the top token alone holds > 50 % of the mass


def test_unknown_and_missing_models(tmp_path):
    from lib.catalogue import UnknownModel
    from server.hub.store import ModelNotInstalled

    reg = ModelRegistry(Settings(models_dir=tmp_path, device="cpu"))
    with pytest.raises(UnknownModel):
        reg.spec("musicgen-tiny-does-not-exist")
    with pytest.raises(ModelNotInstalled):
        reg.get("musicgen-small")
    assert get_spec("musicgen-small").window_s == 30.0
