"""The mixer (server/audio/mix.py) against signals whose mix can be computed by hand."""

from __future__ import annotations

import io
import math

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from lib.schemas import OutputOptions
from server.audio.mix import Duck, Track, loop, mix, pan_gains, spread, trim
from server.audio.render import render

RATE = 8000
# float32 sums of a few terms: far below one 24-bit step
EXACT = 1e-6


def sine(freq: float, seconds: float, amplitude: float = 0.5, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :], channels, axis=0)


def dc(value: float, seconds: float, rate: int = RATE) -> np.ndarray:
    return np.full((1, round(seconds * rate)), value, dtype=np.float32)


def test_two_sines_at_known_offsets_and_gains_sum_exactly():
    a, b = sine(440, 1.0, 0.5), sine(1000, 0.5, 0.25)
    out = mix(
        [Track(a, RATE, offset_s=0.0, gain_db=-6.0), Track(b, RATE, offset_s=0.3, gain_db=3.0)], RATE, 1, RATE * 2
    )
    expected = np.zeros(RATE * 2)
    expected[:RATE] += a[0] * 10 ** (-6 / 20)
    start = round(0.3 * RATE)
    expected[start : start + b.shape[1]] += b[0] * 10 ** (3 / 20)
    assert out.shape == (1, RATE * 2)
    np.testing.assert_allclose(out[0], expected, atol=EXACT)


def test_a_track_at_another_rate_is_resampled_onto_the_mix():
    # 16 kHz into an 8 kHz mix (soxr HQ): a 440 Hz tone comes through within 1e-3 away from its edges.
    a = sine(440, 1.0, 0.5, rate=16000)
    out = mix([Track(a, 16000, offset_s=0.25)], RATE, 1, RATE * 2)
    t = np.arange(RATE) / RATE
    expected = 0.5 * np.sin(2 * np.pi * 440 * t)
    start, edge = round(0.25 * RATE), 80  # 10 ms of the resampler's edge effects on each side
    np.testing.assert_allclose(out[0, start + edge : start + RATE - edge], expected[edge:-edge], atol=1e-3)
    assert np.all(out[0, : start - edge] == 0) and np.all(out[0, start + RATE + edge :] == 0)


def test_trim_takes_the_samples_between_start_and_end():
    audio = np.arange(RATE, dtype=np.float32)[None, :]
    np.testing.assert_array_equal(trim(audio, RATE, 0.25, 0.75)[0], np.arange(2000, 6000))
    assert trim(audio, RATE, 0.5, 99.0).shape == (1, 4000)  # an end past the audio: to its end


def test_fades_are_linear_ramps_of_the_stated_length():
    out = mix([Track(dc(0.5, 1.0), RATE, offset_s=0.5, fade_in_s=0.1, fade_out_s=0.2)], RATE, 1, RATE * 2)[0]
    start, n_in, n_out = 4000, 800, 1600
    np.testing.assert_allclose(out[start : start + n_in], 0.5 * np.arange(n_in) / n_in, atol=EXACT)
    np.testing.assert_allclose(out[start + n_in : start + RATE - n_out], 0.5, atol=EXACT)
    end = start + RATE
    np.testing.assert_allclose(out[end - n_out : end], 0.5 * (np.arange(n_out, 0, -1) - 1) / n_out, atol=EXACT)
    assert np.all(out[:start] == 0) and np.all(out[end:] == 0)


def test_a_fade_out_ends_where_the_mix_cuts_the_track():
    out = mix([Track(dc(0.5, 2.0), RATE, fade_out_s=0.1)], RATE, 1, RATE)[0]  # a 1 s mix of a 2 s track
    np.testing.assert_allclose(out[-800:], 0.5 * (np.arange(800, 0, -1) - 1) / 800, atol=EXACT)
    assert out[-1] == 0.0


def _max_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x))))


def test_a_loop_is_seamless_with_its_crossfade():
    # 200.9 cycles: played end to end, the loop jumps at every seam.
    rate = 16000
    clip = sine(440, 0.4567, 0.5, rate=rate)
    natural = _max_step(clip[0])  # the tone's own largest step: 2π·440/16000·0.5 ≈ 0.086
    threshold = 1.5 * natural
    hard = mix([Track(clip, rate, loop=True, loop_crossfade_s=0.0)], rate, 1, 3 * rate)[0]
    assert _max_step(hard) > threshold  # the check below can fail
    looped = mix([Track(clip, rate, loop=True, loop_crossfade_s=0.05)], rate, 1, 3 * rate)[0]
    assert _max_step(looped) <= threshold
    # It repeats every (length - crossfade): the body after each seam is the clip's.
    length, x = clip.shape[1], round(0.05 * rate)
    period = length - x
    for r in (1, 2, 3):
        np.testing.assert_allclose(looped[r * period + x : (r + 1) * period], clip[0, x:period], atol=EXACT)
    np.testing.assert_allclose(looped[:period], clip[0, :period], atol=EXACT)  # the first pass as it is
    rms = float(np.sqrt(np.mean(np.square(looped[-rate:], dtype=np.float64))))
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)  # it fills the mix to its end


def test_the_loop_crossfade_is_equal_power():
    clip = np.ones((1, 1000), dtype=np.float32)
    out = loop(clip, 3000, 200)[0]
    x = np.arange(200)
    theta = (x + 0.5) / 200 * math.pi / 2
    np.testing.assert_allclose(out[800:1000], np.sin(theta) + np.cos(theta), atol=EXACT)


def test_the_pan_law_is_constant_power_for_mono_and_a_balance_for_stereo():
    assert pan_gains(-1.0) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert pan_gains(1.0) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert pan_gains(0.0) == pytest.approx((10 ** (-3.0103 / 20),) * 2, abs=1e-5)  # -3.01 dB each side
    for pan in np.linspace(-1, 1, 9):
        left, right = pan_gains(float(pan))
        assert left**2 + right**2 == pytest.approx(1.0)
    out = mix([Track(dc(1.0, 0.1), RATE, pan=0.5)], RATE, 2, 800)
    theta = 1.5 * math.pi / 4
    np.testing.assert_allclose(out[:, 400], [math.cos(theta), math.sin(theta)], atol=EXACT)

    stereo = np.stack([np.full(800, 0.4), np.full(800, 0.6)]).astype(np.float32)
    np.testing.assert_allclose(spread(stereo, 2, 0.0), stereo, atol=EXACT)  # centre: as it is
    hard_right = spread(stereo, 2, 1.0)
    np.testing.assert_allclose(hard_right[0], 0.0, atol=EXACT)
    np.testing.assert_allclose(hard_right[1], 0.6, atol=EXACT)
    half_left = spread(stereo, 2, -0.5)
    np.testing.assert_allclose(half_left[0], 0.4, atol=EXACT)
    np.testing.assert_allclose(half_left[1], 0.6 * math.sqrt(2) * math.sin(0.5 * math.pi / 4), atol=EXACT)
    np.testing.assert_allclose(spread(stereo, 1)[0], 0.5, atol=EXACT)  # a mono mix: the channels' mean


def test_ducking_lowers_the_music_by_the_stated_db_under_the_effect():
    db, attack, release = 6.0, 0.05, 0.3
    music = sine(220, 3.0, 0.3)
    effect = sine(1000, 1.0, 0.5)
    out = mix(
        [Track(music, RATE), Track(effect, RATE, offset_s=1.0, role="effect")],
        RATE,
        1,
        3 * RATE,
        Duck(db=db, attack_s=attack, release_s=release, threshold_db=-45.0),
    )[0]
    placed = np.zeros(3 * RATE, dtype=np.float32)
    placed[RATE : 2 * RATE] = effect[0]
    music_part = out - placed  # the effect is as it was: what is left is the music times its gain
    loud = np.abs(music[0]) > 0.1  # away from the tone's zero crossings
    gain_db = np.full(3 * RATE, np.nan)
    gain_db[loud] = 20 * np.log10(music_part[loud] / music[0][loud])
    t = np.arange(3 * RATE) / RATE

    def between(a, b):
        sel = loud & (t >= a) & (t < b)
        assert sel.sum() > 100
        return gain_db[sel]

    np.testing.assert_allclose(between(1.0, 2.0), -db, atol=0.01)  # fully down for the whole effect
    np.testing.assert_allclose(between(0.0, 1.0 - attack - 0.01), 0.0, atol=0.01)
    np.testing.assert_allclose(between(2.0 + release + 0.01, 3.0), 0.0, atol=0.01)
    ramp_down = between(1.0 - attack + 0.01, 1.0 - 0.01)
    assert np.all(ramp_down < 0) and np.all(ramp_down > -db) and np.all(np.diff(ramp_down) <= 1e-6)
    ramp_up = between(2.0 + 0.02, 2.0 + release - 0.02)
    assert np.all(ramp_up < 0) and np.all(ramp_up > -db) and np.all(np.diff(ramp_up) >= -1e-6)


def test_without_ducking_the_roles_change_nothing():
    music, effect = sine(220, 1.0, 0.3), sine(1000, 0.5, 0.5)
    plain = mix([Track(music, RATE), Track(effect, RATE, offset_s=0.2, role="effect")], RATE, 1, RATE)
    same = mix([Track(music, RATE), Track(effect, RATE, offset_s=0.2)], RATE, 1, RATE)
    np.testing.assert_array_equal(plain, same)


def test_the_mix_reaches_the_loudness_target_within_half_a_lu():
    rate = 44100
    tracks = [Track(sine(220, 4.0, 0.05, rate), rate), Track(sine(660, 2.0, 0.02, rate, 2), rate, offset_s=1.0)]
    audio = mix(tracks, rate, 2, 5 * rate)
    options = OutputOptions(format="wav", bit_depth=32, sample_rate=rate, normalize="loudness")
    decoded, decoded_rate = sf.read(io.BytesIO(render(audio, rate, options).data), always_2d=True)
    measured = pyloudnorm.Meter(decoded_rate).integrated_loudness(decoded)
    assert measured == pytest.approx(-14.0, abs=0.5)
    before = pyloudnorm.Meter(rate).integrated_loudness(audio.T.astype(np.float64))
    assert abs(before + 14.0) > 5  # it was not at the target before
