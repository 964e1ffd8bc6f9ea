"""The audio seam: decode, resample, loudness, encode, render. Real codecs, no mocks."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydantic
import pyloudnorm
import pytest
import soundfile as sf
from audio_files import make_m4a

from lib.schemas import GenerateRequest, OutputOptions
from server.audio.decode import read_audio, to_channels, to_mono
from server.audio.encode import FILE_EXTENSIONS, MEDIA_TYPES, MP3_SAMPLE_RATES, encode_audio
from server.audio.errors import AudioInputError
from server.audio.loudness import PEAK_DBFS, TARGET_LUFS, normalize
from server.audio.render import RenderedAudio, render
from server.audio.resample import fit_length, resample

# One MP3 frame is 1152 samples; lossy codecs may add up to a couple of frames of delay/padding.
LOSSY_LENGTH_TOLERANCE = 2 * 1152


def sine(sample_rate: int, duration_s: float, channels: int = 1, freq_hz: float = 440.0, amp: float = 0.3):
    t = np.arange(round(sample_rate * duration_s)) / sample_rate
    # Slightly different phase per channel so channel mix-ups would show.
    rows = [amp * np.sin(2 * np.pi * freq_hz * t + 0.3 * c) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def peak_dbfs(audio: np.ndarray) -> float:
    return 20 * np.log10(np.max(np.abs(audio)))


def lufs(audio: np.ndarray, sample_rate: int) -> float:
    return pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64))


def wav_bytes(frames: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """``frames`` in soundfile's (samples, channels) layout."""
    buf = io.BytesIO()
    sf.write(buf, frames, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()


# --- encode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    ("fmt", "bit_depth", "subtype", "atol"),
    [
        ("wav", 16, "PCM_16", 2**-15),
        ("wav", 24, "PCM_24", 2**-23),
        ("wav", 32, "FLOAT", 0.0),
        ("flac", 16, "PCM_16", 2**-15),
        ("flac", 24, "PCM_24", 2**-23),
    ],
)
def test_lossless_round_trip(fmt, bit_depth, subtype, atol, channels):
    audio = sine(32000, 0.5, channels)
    data, media_type = encode_audio(audio, 32000, fmt, bit_depth)
    assert media_type == MEDIA_TYPES[fmt]
    info = sf.info(io.BytesIO(data))
    assert info.subtype == subtype
    back, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == 32000
    assert back.shape == (audio.shape[1], channels)
    if atol == 0.0:
        np.testing.assert_array_equal(back.T, audio)  # float wav is bit-exact
    else:
        np.testing.assert_allclose(back.T, audio, atol=atol)


def test_float_wav_keeps_out_of_range_samples_exactly():
    audio = np.array([[0.0, 1.5, -2.0, 1e-9, np.float32(0.1)]], dtype=np.float32)
    data, _ = encode_audio(audio, 48000, "wav", 32)
    back, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(back.T, audio)


@pytest.mark.parametrize(
    ("fmt", "sample_rate"),
    [("mp3", 44100), ("mp3", 32000), ("mp3", 16000), ("ogg", 44100), ("ogg", 32000), ("ogg", 96000)],
)
@pytest.mark.parametrize("channels", [1, 2])
def test_lossy_round_trip(fmt, sample_rate, channels):
    audio = sine(sample_rate, 1.0, channels)
    data, media_type = encode_audio(audio, sample_rate, fmt, 24)  # bit_depth is ignored
    assert media_type == {"mp3": "audio/mpeg", "ogg": "audio/ogg"}[fmt]
    back, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == sample_rate
    assert back.shape[1] == channels
    assert abs(back.shape[0] - audio.shape[1]) <= LOSSY_LENGTH_TOLERANCE
    # Same level within half a dB: the codec kept the tone, not garbage.
    rms_in, rms_out = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(back**2))
    assert abs(20 * np.log10(rms_out / rms_in)) < 0.5


def test_integer_formats_clip_instead_of_wrapping():
    audio = np.array([[1.5, -1.5, 0.5, 3.0]], dtype=np.float32)
    for fmt, depth in [("wav", 16), ("wav", 24), ("flac", 16), ("flac", 24)]:
        data, _ = encode_audio(audio, 44100, fmt, depth)
        back, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        assert back[0, 0] > 0.999 and back[1, 0] == -1.0 and back[3, 0] > 0.999


def test_media_types_and_extensions_cover_every_format():
    assert MEDIA_TYPES == {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}
    assert FILE_EXTENSIONS == {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "ogg": ".ogg"}


def test_flac_32_bit_is_rejected():
    with pytest.raises(ValueError, match="24-bit"):
        encode_audio(sine(44100, 0.1), 44100, "flac", 32)


@pytest.mark.parametrize("sample_rate", [10000, 88200, 96000, 192000])
def test_mp3_unsupported_rate_is_a_clear_error(sample_rate):
    with pytest.raises(ValueError, match=f"mp3 cannot be written at {sample_rate} Hz.*44100"):
        encode_audio(sine(sample_rate, 0.1), sample_rate, "mp3")


def test_mp3_every_listed_rate_encodes():
    for sample_rate in MP3_SAMPLE_RATES:
        data, _ = encode_audio(sine(sample_rate, 0.2, 2), sample_rate, "mp3")
        assert sf.info(io.BytesIO(data)).samplerate == sample_rate


def test_mp3_more_than_two_channels_is_rejected():
    with pytest.raises(ValueError, match="at most 2 channels"):
        encode_audio(sine(44100, 0.1, 3), 44100, "mp3")


def test_encode_replaces_non_finite_samples():
    audio = np.array([[np.nan, np.inf, -np.inf, 0.5]], dtype=np.float32)
    data, _ = encode_audio(audio, 44100, "wav", 32)
    back, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(back[:, 0], [0.0, 0.0, 0.0, 0.5])


# --- resample ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_rate", "to_rate"), [(32000, 44100), (16000, 44100), (24000, 48000), (44100, 32000), (48000, 16000)]
)
@pytest.mark.parametrize("n_samples", [1, 7, 999, 32001, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_resample_length_is_exact(from_rate, to_rate, n_samples, channels):
    audio = np.random.default_rng(n_samples).uniform(-0.5, 0.5, (channels, n_samples)).astype(np.float32)
    out = resample(audio, from_rate, to_rate)
    assert out.shape == (channels, round(n_samples * to_rate / from_rate))
    assert out.dtype == np.float32


def test_resample_keeps_the_pitch_and_channels():
    audio = np.concatenate([sine(32000, 1.0, 1, freq_hz=1000.0), sine(32000, 1.0, 1, freq_hz=3000.0)])
    out = resample(audio, 32000, 44100)
    for channel, freq_hz in zip(out, (1000.0, 3000.0), strict=True):
        spectrum = np.abs(np.fft.rfft(channel))
        assert abs(np.argmax(spectrum) * 44100 / len(channel) - freq_hz) < 2.0


def test_resample_same_rate_is_identity_and_empty_is_empty():
    audio = sine(44100, 0.1, 2)
    np.testing.assert_array_equal(resample(audio, 44100, 44100), audio)
    assert resample(np.zeros((2, 0), np.float32), 32000, 44100).shape == (2, 0)


def test_fit_length_trims_and_pads_with_zeros():
    audio = np.ones((2, 5), np.float32)
    assert fit_length(audio, 3).shape == (2, 3)
    padded = fit_length(audio, 8)
    assert padded.shape == (2, 8)
    np.testing.assert_array_equal(padded[:, 5:], 0.0)
    np.testing.assert_array_equal(padded[:, :5], 1.0)


# --- loudness ----------------------------------------------------------------------------------


def _uniform_noise(sample_rate: int, duration_s: float, channels: int, amp: float) -> np.ndarray:
    # Uniform noise: low crest factor, so the -1 dBFS peak cap does not bind at -14 LUFS.
    rng = np.random.default_rng(1)
    return rng.uniform(-amp, amp, (channels, round(sample_rate * duration_s))).astype(np.float32)


@pytest.mark.parametrize("sample_rate", [32000, 44100])
@pytest.mark.parametrize(
    "make",
    [
        lambda rate: sine(rate, 3.0, 2, amp=0.05),
        lambda rate: sine(rate, 3.0, 1, freq_hz=1000.0, amp=0.9),
        lambda rate: _uniform_noise(rate, 3.0, 2, amp=0.02),
        lambda rate: _uniform_noise(rate, 3.0, 1, amp=0.8),
    ],
)
def test_loudness_normalize_hits_target_without_clipping(sample_rate, make):
    out = normalize(make(sample_rate), sample_rate, "loudness")
    assert out.dtype == np.float32
    assert abs(lufs(out, sample_rate) - TARGET_LUFS) <= 0.5
    assert peak_dbfs(out) <= PEAK_DBFS + 1e-4


def test_loudness_peak_cap_wins_over_the_target():
    # Quiet bed with one full-scale click: reaching -14 LUFS would clip the click.
    audio = sine(44100, 3.0, 1, amp=0.01)
    audio[0, 1000] = 1.0
    out = normalize(audio, 44100, "loudness")
    assert peak_dbfs(out) == pytest.approx(PEAK_DBFS, abs=1e-3)
    assert lufs(out, 44100) < TARGET_LUFS


def test_peak_normalize_sets_peak_to_minus_one_dbfs():
    out = normalize(sine(44100, 1.0, 2, amp=0.1), 44100, "peak")
    assert peak_dbfs(out) == pytest.approx(PEAK_DBFS, abs=1e-3)


def test_none_leaves_audio_alone():
    audio = sine(44100, 1.0, 2, amp=0.1)
    np.testing.assert_array_equal(normalize(audio, 44100, "none"), audio)


@pytest.mark.parametrize("mode", ["loudness", "peak", "none"])
@pytest.mark.parametrize("duration_s", [0.0, 0.05, 3.0])
def test_silence_stays_silence_without_warnings(mode, duration_s):
    audio = np.zeros((2, round(44100 * duration_s)), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize(audio, 44100, mode)
    assert out.shape == audio.shape
    np.testing.assert_array_equal(out, 0.0)


def test_near_silence_is_not_amplified_to_the_target():
    # -90 dBFS: under BS.1770's -70 LUFS absolute gate, i.e. silence; boosting it would be +76 dB.
    audio = sine(44100, 3.0, 1, amp=10 ** (-90 / 20))
    np.testing.assert_array_equal(normalize(audio, 44100, "loudness"), audio)


def test_short_audio_falls_back_and_stays_below_peak():
    # 0.1 s is shorter than one 400 ms BS.1770 block: pyloudnorm cannot measure it.
    audio = sine(44100, 0.1, 2, freq_hz=1000.0, amp=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize(audio, 44100, "loudness")
    assert np.all(np.isfinite(out))
    assert peak_dbfs(out) <= PEAK_DBFS + 1e-4
    # The same tone made 3 s long measures close to the target with the real meter.
    gain = np.max(np.abs(out)) / np.max(np.abs(audio))
    long_tone = sine(44100, 3.0, 2, freq_hz=1000.0, amp=0.01) * gain
    assert abs(lufs(long_tone, 44100) - TARGET_LUFS) < 1.0


@pytest.mark.parametrize("mode", ["loudness", "peak", "none"])
def test_non_finite_samples_become_zero(mode):
    audio = sine(44100, 1.0, 2, amp=0.1)
    audio[0, 10] = np.nan
    audio[1, 20] = np.inf
    audio[1, 30] = -np.inf
    out = normalize(audio, 44100, mode)
    assert np.all(np.isfinite(out))
    assert out[0, 10] == 0.0 and out[1, 20] == 0.0 and out[1, 30] == 0.0
    if mode != "none":
        assert peak_dbfs(out) <= PEAK_DBFS + 1e-4


# --- decode ------------------------------------------------------------------------------------


def test_decode_wav_gives_channels_first_float32():
    frames = sine(22050, 0.5, 2).T
    audio, rate = read_audio(wav_bytes(frames, 22050, "FLOAT"), "a.wav")
    assert rate == 22050 and audio.dtype == np.float32 and audio.shape == (2, frames.shape[0])
    np.testing.assert_array_equal(audio, frames.T)


def _zero_sample_wav() -> bytes:
    return wav_bytes(np.zeros((0, 1), np.float32), 16000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (np.random.default_rng(0).bytes(20000), "not audio we can read"),
        (b"this is a text file, not a song\n" * 50, "not audio we can read"),
        (wav_bytes(np.zeros((1000, 1), np.float32), 16000)[:20], "not audio we can read"),
        (wav_bytes(np.zeros((1000, 1), np.float32), 16000)[:44], "no audio samples"),
        (_zero_sample_wav(), "no audio samples"),
    ],
    ids=["empty", "random", "text", "truncated-header", "header-only", "zero-samples"],
)
def test_decode_rejects_unusable_input(data, message):
    with pytest.raises(AudioInputError, match=message) as caught:
        read_audio(data, "upload.wav")
    assert isinstance(caught.value, ValueError)
    assert "'upload.wav'" in caught.value.message
    assert "wav, flac, ogg, mp3" in caught.value.message  # says what to send instead


def test_decode_truncated_body_keeps_what_is_there():
    data = wav_bytes(sine(16000, 1.0).T, 16000)
    audio, rate = read_audio(data[: 44 + 2 * 500])
    assert rate == 16000 and audio.shape == (1, 500)


def test_one_channel_rule_for_every_input():
    """Up to 5.1 is read, by the whole-file reader and the block reader alike; more is refused."""
    from server.audio.stream import open_audio

    six = wav_bytes(np.zeros((1000, 6), np.float32) + 0.1, 48000)
    assert read_audio(six)[0].shape == (6, 1000)
    assert open_audio(io.BytesIO(six)).channels == 6
    eight = wav_bytes(np.zeros((1000, 8), np.float32) + 0.1, 48000)
    with pytest.raises(AudioInputError, match="8 channels; at most 6"):
        read_audio(eight)
    with pytest.raises(AudioInputError, match="8 channels; at most 6"):
        open_audio(io.BytesIO(eight))


def test_decode_max_duration_guard():
    data = wav_bytes(sine(8000, 3.0).T, 8000)
    assert read_audio(data, max_duration_s=3.0)[0].shape == (1, 24000)
    with pytest.raises(AudioInputError, match="longer than 2 s"):
        read_audio(data, max_duration_s=2.0)
    with pytest.raises(AudioInputError, match="longer than 0.5 s"):
        read_audio(make_m4a(sine(8000, 3.0), 8000), max_duration_s=0.5)


def test_decode_replaces_non_finite_samples_in_float_wav():
    frames = np.array([[0.5], [np.nan], [np.inf], [-0.5]], np.float32)
    audio, _ = read_audio(wav_bytes(frames, 8000, "FLOAT"))
    np.testing.assert_array_equal(audio, [[0.5, 0.0, 0.0, -0.5]])


@pytest.mark.parametrize(("sample_rate", "channels"), [(8000, 1), (32000, 2), (44100, 2), (48000, 1)])
def test_decode_mp3(sample_rate, channels):
    source = sine(sample_rate, 1.0, channels)
    data, _ = encode_audio(source, sample_rate, "mp3")
    audio, rate = read_audio(data, "song.mp3")
    assert rate == sample_rate and audio.shape[0] == channels
    assert abs(audio.shape[1] - source.shape[1]) <= LOSSY_LENGTH_TOLERANCE


@pytest.mark.parametrize(
    ("sample_rate", "channels"), [(8000, 1), (22050, 1), (44100, 2), (48000, 2), (96000, 6)]
)
def test_decode_m4a_aac(sample_rate, channels):
    source = sine(sample_rate, 1.0, channels)
    audio, rate = read_audio(make_m4a(source, sample_rate), "voice.m4a")
    assert rate == sample_rate and audio.shape[0] == channels and audio.dtype == np.float32
    # AAC adds encoder priming (1024 samples) and pads the last frame; PyAV decodes both.
    assert source.shape[1] <= audio.shape[1] <= source.shape[1] + 3 * 1024
    rms_in, rms_out = np.sqrt(np.mean(source**2)), np.sqrt(np.mean(audio**2))
    assert abs(20 * np.log10(rms_out / rms_in)) < 1.0


def test_to_mono_and_to_channels():
    stereo = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(to_mono(stereo), [[0.5, 0.5]])
    np.testing.assert_array_equal(to_channels(stereo, 1), [[0.5, 0.5]])
    mono = np.array([[0.25, -0.25]], np.float32)
    np.testing.assert_array_equal(to_channels(mono, 2), [[0.25, -0.25], [0.25, -0.25]])
    assert to_channels(stereo, 2) is stereo
    assert to_channels(np.zeros((6, 10), np.float32), 2).shape == (2, 10)
    with pytest.raises(ValueError):
        to_mono(np.zeros(10, np.float32))


# --- render ------------------------------------------------------------------------------------


def test_render_resamples_normalizes_and_encodes():
    options = OutputOptions(format="mp3", sample_rate=44100, normalize="loudness")
    result = render(sine(32000, 3.0, 2, amp=0.05), 32000, options)
    assert isinstance(result, RenderedAudio)
    assert (result.media_type, result.extension) == ("audio/mpeg", ".mp3")
    assert (result.sample_rate, result.channels) == (44100, 2)
    assert result.duration_s == pytest.approx(3.0)
    back, rate = sf.read(io.BytesIO(result.data), dtype="float32", always_2d=True)
    assert rate == 44100 and back.shape[1] == 2
    assert abs(lufs(back.T, 44100) - TARGET_LUFS) <= 0.5


def test_render_native_rate_float_wav():
    audio = sine(32000, 1.0, 1, amp=0.2)
    result = render(
        audio, 32000, OutputOptions(format="wav", sample_rate="native", bit_depth=32, normalize="none")
    )
    assert (result.sample_rate, result.channels, result.media_type) == (32000, 1, "audio/wav")
    back, _ = sf.read(io.BytesIO(result.data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(back.T, audio)


# --- schema ------------------------------------------------------------------------------------


def test_schema_rejects_flac_32_bit():
    message = (
        "flac holds at most 24-bit integer samples; use bit_depth 16 or 24, or format wav for 32-bit float"
    )
    with pytest.raises(pydantic.ValidationError, match=message):
        OutputOptions(format="flac", bit_depth=32)
    with pytest.raises(pydantic.ValidationError, match="flac holds at most 24-bit"):
        GenerateRequest(prompt="drums", format="flac", bit_depth=32)
    OutputOptions(format="flac", bit_depth=24)
    OutputOptions(format="wav", bit_depth=32)


def test_schema_rejects_mp3_rates_it_cannot_write():
    with pytest.raises(pydantic.ValidationError, match="mp3 cannot be written at 96000 Hz.*48000"):
        OutputOptions(format="mp3", sample_rate=96000)
    with pytest.raises(pydantic.ValidationError, match="mp3 cannot be written at 10000 Hz"):
        OutputOptions(format="mp3", sample_rate=10000)
    OutputOptions(format="mp3", sample_rate=48000)
    OutputOptions(format="mp3", sample_rate="native")
    OutputOptions(format="mp3", bit_depth=32)  # ignored for lossy formats
    OutputOptions(format="ogg", sample_rate=96000)


def test_same_audio_gives_same_bytes_in_every_format():
    # libsndfile's PEAK chunk would stamp float wav with the time; identical requests must give
    # identical files.
    import time as _time

    audio = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 16000)).astype(np.float32)
    kinds = (("wav", 32), ("wav", 16), ("flac", 24))
    first = [encode_audio(audio, 32000, fmt, depth)[0] for fmt, depth in kinds]
    _time.sleep(1.1)  # the PEAK timestamp has one-second resolution
    assert [encode_audio(audio, 32000, fmt, depth)[0] for fmt, depth in kinds] == first
