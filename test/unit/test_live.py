"""Streamed audio, on tiny models: the engine's live decode against the one-pass decode, a streaming
request inside a batch, and the stream encoders' bytes read back by soundfile and PyAV."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from engine_reference import generate, generate_codes

from lib.settings import Settings
from server.audio.outstream import AudioStreamEncoder, StreamedAudio, wav_header
from server.engine.decode import DecodeBatch, DecodeRequest
from server.engine.text_to_audio import LIVE_FIRST_CHUNK_FRAMES, AudioRequest, LongForm
from server.models.registry import ModelRegistry

SR = 32000
# Streamed and one-pass audio differ only by float rounding: the streaming decoder computes the same
# sums over chunks (measured: 1.5e-7 on tiny models; 9e-8 on the real-shape 32 kHz EnCodec,
# docs/benchmarks.md). The bound leaves room for other CPUs' kernels, and is far below one 16-bit
# step (3e-5).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


def streamed(lm, item: AudioRequest, others: list[DecodeRequest] = ()) -> tuple[list[np.ndarray], LongForm, list]:
    """One request streamed as the decode lane streams it (DecodeBatch.final_codes after each step),
    with `others` (not streamed) in the same batch; returns its chunks, its plan and the others' codes."""
    plan = LongForm(lm, item, stride_s=18.0)
    plan.stream()
    chunks: list[np.ndarray] = []

    def take() -> None:
        audio = plan.take_audio()
        if audio is not None:
            chunks.append(audio)

    take()
    batch = DecodeBatch(lm)
    extra = [batch.add(r) for r in others]
    done: dict[int, torch.Tensor] = {}
    while not plan.done:
        handle = batch.add(plan.request())
        while handle not in batch.finished():
            for h in batch.step():
                if h in extra:
                    done[h] = batch.pop(h)
            if handle in batch.finished():
                break
            plan.stream_window(batch.final_codes(handle, plan.stream_from()))
            take()
        plan.accept(batch.pop(handle))
        take()
    while len(batch):
        for h in batch.step():
            done[h] = batch.pop(h)
    return chunks, plan, [done.get(h) for h in extra]


@pytest.mark.parametrize(
    ("name", "duration_s"),
    [("musicgen-small", 3.0), ("musicgen-small", 31.0), ("musicgen-stereo-small", 2.0), ("audiogen-medium", 12.5)],
)
def test_streamed_audio_is_the_one_pass_audio(registry, name, duration_s):
    """Mono, stereo (a stream per channel) and long-form (windows, and the one-pass decode's pieces)."""
    lm = registry.get(name)
    item = AudioRequest("live", duration_s=duration_s, seed=3)
    whole = generate(lm, item, stride_s=18.0).audio
    chunks, plan, _ = streamed(lm, item)
    audio = np.concatenate(chunks, axis=-1)
    assert audio.shape == whole.shape == (lm.channels, round(duration_s * lm.sample_rate))
    assert np.abs(audio - whole).max() < TOLERANCE
    assert len(chunks) >= 2 and chunks[0].shape[-1] < whole.shape[-1] / 2
    assert np.array_equal(plan.waveform().audio, audio)  # the stored answer is what was streamed


@pytest.mark.parametrize("include_prompt", [True, False])
def test_a_continuation_streams_its_prompt_first_then_the_new_audio(registry, include_prompt):
    lm = registry.get("musicgen-small")
    prompt = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)[None]
    item = AudioRequest("", duration_s=2.0, seed=4, prompt_audio=prompt, include_prompt=include_prompt)
    whole = generate(lm, item, stride_s=18.0).audio
    chunks, _, _ = streamed(lm, item)
    audio = np.concatenate(chunks, axis=-1)
    assert audio.shape == whole.shape and np.abs(audio - whole).max() < TOLERANCE
    if include_prompt:  # the prompt's frames are final from the start: its audio comes before any step
        assert chunks[0].shape[-1] > SR / 2


def test_a_streaming_request_batched_with_others_gets_the_tokens_it_gets_alone(registry):
    lm = registry.get("musicgen-small")
    item = AudioRequest("together", duration_s=2.0, seed=21)
    other = DecodeRequest("another", 80, seed=5)
    chunks, plan, (other_codes,) = streamed(lm, item, [other])
    alone = generate_codes(lm, [DecodeRequest("together", 100, seed=21)])[0]
    assert torch.equal(plan.codes, alone)
    assert torch.equal(other_codes, generate_codes(lm, [other])[0])
    assert np.abs(np.concatenate(chunks, axis=-1) - generate(lm, item, stride_s=18.0).audio).max() < TOLERANCE


def test_final_codes_are_the_frames_the_delay_pattern_has_completed(registry):
    lm = registry.get("musicgen-small")  # 4 codebooks: frame t is final after step t + 4
    batch = DecodeBatch(lm)
    handle = batch.add(DecodeRequest("x", 40, seed=1))
    for _ in range(3):
        batch.step()
    assert batch.final_codes(handle, 0).shape == (4, 0)
    for _ in range(LIVE_FIRST_CHUNK_FRAMES):
        batch.step()
    step = batch.progress(handle)[0]
    partial = batch.final_codes(handle, 2)
    assert partial.shape == (4, step - 3 - 2)
    while handle not in batch.finished():
        batch.step()
    assert torch.equal(batch.pop(handle)[:, 2 : 2 + partial.shape[1]], partial)


# -- the stream encoders ----------------------------------------------------------------------


def _sine(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * (330 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def _encode(out: StreamedAudio, audio: np.ndarray, rate: int, block: int = 4000) -> tuple[bytes, list[int]]:
    enc = AudioStreamEncoder(out, rate)
    parts = [enc.start()]
    for i in range(0, audio.shape[-1], block):
        parts.append(enc.push(audio[:, i : i + block]))
    parts.append(enc.finish())
    return b"".join(parts), [len(p) for p in parts]


def test_the_wav_header_has_open_sizes():
    header = wav_header(44100, 2, 16)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", header[4:8])[0] == struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF


@pytest.mark.parametrize("bit_depth", [16, 24, 32])
@pytest.mark.parametrize("channels", [1, 2])
def test_an_open_length_wav_reads_back_in_soundfile_and_pyav(bit_depth, channels):
    audio = _sine(SR, 1.0, channels)
    data, sizes = _encode(StreamedAudio("wav", SR, channels, bit_depth), audio, SR)
    assert sum(sizes) == 44 + audio.size * bit_depth // 8 and all(sizes[1:-1])  # bytes with every block
    back, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == SR and back.shape == audio.T.shape
    assert np.abs(back.T - audio).max() < (1e-7 if bit_depth == 32 else 2.0 ** (1 - bit_depth))
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.channels == channels
        assert sum(f.samples for f in container.decode(audio=0)) == audio.shape[-1]


@pytest.mark.parametrize("bit_depth", [16, 24, 32])
def test_pcm_is_the_interleaved_samples(bit_depth):
    audio = _sine(SR, 0.5, 2)
    data, _ = _encode(StreamedAudio("pcm", SR, 2, bit_depth), audio, SR)
    if bit_depth == 24:
        raw = np.frombuffer(data, np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16) << 8
        back = (ints >> 8) / 8388607.0
    else:
        back = np.frombuffer(data, "<f4" if bit_depth == 32 else "<i2") / (1.0 if bit_depth == 32 else 32767.0)
    assert np.abs(back.reshape(-1, 2).T - audio).max() < 2.0 ** (1 - min(bit_depth, 24))


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 32000), ("mp3", 44100), ("ogg", 48000)])
@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_and_ogg_come_as_they_are_encoded_and_decode(fmt, rate, channels):
    audio = _sine(SR, 3.0, channels)
    data, sizes = _encode(StreamedAudio(fmt, rate, channels), audio, SR, block=SR // 2)
    assert sum(1 for s in sizes[1:-1] if s) >= 3  # bytes go out while the audio comes, not at the end
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.codec.id == av.Codec("mp3" if fmt == "mp3" else "opus").id
        assert stream.codec_context.channels == channels
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples - 3.0 * rate) < 0.1 * rate  # the codecs' own priming and padding aside
    back, back_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert back_rate == rate and back.shape[1] == channels
