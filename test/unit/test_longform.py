"""Long-form generation by sliding windows, and audio prompts, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_reference import generate, generate_codes

from lib.settings import Settings
from server.engine.decode import DecodeRequest
from server.engine.text_to_audio import AudioRequest, LongForm, Window, plan_windows
from server.models.registry import ModelRegistry

SR = 32000


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


def test_plan_musicgen_windows():
    # 45 s: one 30 s window, then 15 s more beside 15 s of context.
    assert plan_windows(2250, 0, 1500, 900) == [Window(0, 0, 1500), Window(750, 750, 750)]
    # 300 s: 30 s, then 15 steps of 12 s context + 18 s new.
    windows = plan_windows(15000, 0, 1500, 900)
    assert len(windows) == 16
    assert all(w.n_frames <= 1500 for w in windows)
    assert [(w.context_frames, w.new_frames) for w in windows[1:]] == [(600, 900)] * 15
    assert sum(w.new_frames for w in windows) == 15000
    # Each window's context is the tail of what came before.
    for before, w in zip(windows, windows[1:], strict=False):
        assert w.start_frame + w.context_frames == before.start_frame + before.n_frames


def test_plan_with_an_audio_prompt_and_other_strides():
    assert plan_windows(250 + 500, 250, 1500, 900) == [Window(0, 250, 500)]
    assert plan_windows(1400 + 300, 1400, 1500, 900) == [Window(200, 1200, 300)]
    # AudioGen-like: 10 s windows, 6 s stride.
    windows = plan_windows(1000, 0, 500, 300)
    assert [(w.context_frames, w.new_frames) for w in windows] == [(0, 500), (200, 300), (300, 200)]
    with pytest.raises(ValueError):
        plan_windows(100, 0, 50, 0)


def test_long_music_is_exactly_the_asked_duration_and_starts_as_a_short_one(registry):
    lm = registry.get("musicgen-small")
    item = AudioRequest("lofi beat", duration_s=45.0, seed=11, temperature=1.0)
    seen = []
    wave = generate(lm, item, stride_s=18.0, on_window=lambda plan: seen.append(plan.progress()))
    assert wave.audio.shape == (1, 45 * SR)
    assert wave.duration_s == 45.0
    assert len(seen) == 2 and seen[-1][0] == seen[-1][1]  # progress covers both windows
    plan = LongForm(lm, item, stride_s=18.0)
    first = generate_codes(lm, [plan.request()])[0]
    alone = generate_codes(lm, [DecodeRequest("lofi beat", 1500, seed=11)])[0]
    assert torch.equal(first, alone)  # window 0 is what a 30 s request makes


def test_stride_setting_changes_the_windows(registry):
    lm = registry.get("musicgen-small")
    plan = LongForm(lm, AudioRequest("x", duration_s=70.0, seed=0), stride_s=10.0)
    assert [w.new_frames for w in plan.windows] == [1500, 500, 500, 500, 500]
    assert Settings(musicgen_stride_s=10.0).stride_s("musicgen") == 10.0
    assert Settings().stride_s("audiogen") == 6.0


def test_long_melody_rewindows_and_wraps(registry):
    lm = registry.get("musicgen-melody")
    t = np.arange(SR * 7) / SR
    melody = (0.3 * np.sin(2 * np.pi * 262 * t)).astype(np.float32)
    plan = LongForm(lm, AudioRequest("x", duration_s=40.0, seed=0, melody=melody), stride_s=18.0)
    assert len(plan.windows) == 2
    chromas = []
    while not plan.done:
        request = plan.request()
        chromas.append(request.chroma)
        plan.accept(generate_codes(lm, [request])[0])
    assert all(c.shape == (235, 12) for c in chromas)  # 30 s of wrapped melody per window
    assert plan.waveform().audio.shape == (1, 40 * SR)


@pytest.mark.parametrize("include_prompt", [True, False])
def test_continuation_answer_length(registry, include_prompt):
    lm = registry.get("musicgen-stereo-small")
    prompt = (0.1 * np.random.default_rng(0).standard_normal((2, SR * 2 + 100))).astype(np.float32)
    item = AudioRequest("", duration_s=3.0, seed=4, prompt_audio=prompt, include_prompt=include_prompt)
    wave = generate(lm, item, stride_s=18.0)
    assert wave.audio.shape == (2, (2 * SR if include_prompt else 0) + 3 * SR)  # prompt cut to whole frames


def test_continuation_past_the_window(registry):
    lm = registry.get("musicgen-small")
    prompt = np.zeros((1, SR * 5), dtype=np.float32)
    plan = LongForm(lm, AudioRequest("x", duration_s=35.0, seed=0, prompt_audio=prompt), stride_s=18.0)
    assert [(w.context_frames, w.new_frames) for w in plan.windows] == [(250, 1250), (1000, 500)]


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small"])
def test_long_timelines_decode_in_pieces_that_join_seamlessly(registry, name, monkeypatch):
    from server.engine import decode

    lm = registry.get(name)
    codes = torch.randint(0, 2048, (lm.num_codebooks, 350), generator=torch.Generator().manual_seed(0))
    whole = decode.codes_to_audio(lm, codes)  # 350 frames: one pass
    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 100)
    pieces = decode.codes_to_audio(lm, codes)  # four pieces with 50 frames of context each side
    assert pieces.shape == whole.shape == (lm.channels, 350 * 640)
    assert not torch.equal(pieces, whole)  # really decoded differently...
    assert (pieces - whole).abs().max() < 1e-4 * whole.abs().max()  # ...to the same audio


def test_a_long_request_decodes_its_audio_between_windows(registry, monkeypatch):
    from server.engine import decode

    monkeypatch.setattr(decode, "DECODE_CHUNK_FRAMES", 500)
    lm = registry.get("musicgen-small")
    plan = LongForm(lm, AudioRequest("x", duration_s=45.0, seed=1), stride_s=18.0)
    plan.accept(generate_codes(lm, [plan.request()])[0])
    assert len(plan._audio) == 2  # frames 0-1000 (and 50 frames of context) are final after window 0
    plan.accept(generate_codes(lm, [plan.request()])[0])
    wave = plan.waveform()
    # The two pieces ready after window 0 decode as one batch of the codec (decode.decode_pieces),
    # which equals decoding each alone to float rounding, not bit for bit (test_codec_batch.py).
    np.testing.assert_allclose(wave.audio, decode.codes_to_audio(lm, plan.codes).numpy(), rtol=0, atol=1e-6)
