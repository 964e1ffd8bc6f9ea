"""Decode uploaded audio (bytes, or a file such as a spooled upload) into float32 arrays of shape
(channels, samples)."""

from __future__ import annotations

import io
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf

from server.audio.errors import AudioInputError

SUPPORTED_HINT = "send a wav, flac, ogg, mp3 or m4a/aac file"
# The one channel rule of every input (a melody, an audio prompt, an upload to encode): up to 5.1.
# More is not music a model can follow nor a layout to guess a fold-down for: refused, not mixed.
MAX_INPUT_CHANNELS = 6


def check_channels(channels: int, name: str) -> None:
    """AudioInputError past MAX_INPUT_CHANNELS; called as soon as a file's channel count is known."""
    if channels > MAX_INPUT_CHANNELS:
        raise AudioInputError(
            f"{name} has {channels} channels; at most {MAX_INPUT_CHANNELS} are accepted. "
            "Mix it down to mono or stereo and send it again"
        )


def _rewound(data: bytes | BinaryIO) -> BinaryIO:
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(data)
    data.seek(0)
    return data


def _is_empty(data: bytes | BinaryIO) -> bool:
    if isinstance(data, bytes | bytearray | memoryview):
        return not data
    data.seek(0, io.SEEK_END)
    return data.tell() == 0


def read_audio(
    data: bytes | BinaryIO,
    filename: str | None = None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``data`` (bytes, or a seekable binary file: it is read, never closed) into
    (float32 (channels, samples), sample_rate).

    soundfile (libsndfile) goes first: it is fast and exact for wav/flac/ogg/mp3. PyAV (ffmpeg)
    is the fallback for everything else (m4a/aac, webm, ...). Non-finite samples, which a float
    wav can carry, become 0 so they cannot poison a model. Files with more than MAX_INPUT_CHANNELS
    are refused before they are decoded; ``max_duration_s`` refuses inputs that would decode to an
    unreasonable size.
    """
    name = f"'{filename}'" if filename else "the uploaded file"
    if _is_empty(data):
        raise AudioInputError(f"{name} is empty; {SUPPORTED_HINT}")

    decoded = _read_with_soundfile(data, name, max_duration_s)
    if decoded is None or decoded[0].shape[1] == 0:
        # A 0-sample answer from libsndfile may still be a container ffmpeg reads better.
        decoded = _read_with_pyav(data, name, max_duration_s) or decoded
    if decoded is None:
        raise AudioInputError(f"{name} is not audio we can read; {SUPPORTED_HINT}")

    audio, sample_rate = decoded
    if audio.shape[1] == 0:
        raise AudioInputError(f"{name} contains no audio samples (empty or truncated); {SUPPORTED_HINT}")
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0), sample_rate


def _check_duration(n_samples: int, sample_rate: int, name: str, max_duration_s: float | None) -> None:
    if max_duration_s is not None and n_samples > max_duration_s * sample_rate:
        raise AudioInputError(f"{name} is longer than {max_duration_s:g} s; trim it and send it again")


def _read_with_soundfile(
    data: bytes | BinaryIO, name: str, max_duration_s: float | None
) -> tuple[np.ndarray, int] | None:
    try:
        with sf.SoundFile(_rewound(data)) as f:
            check_channels(f.channels, name)
            # The header's frame count lets us refuse a long file before decoding all of it.
            if f.frames > 0:
                _check_duration(f.frames, f.samplerate, name, max_duration_s)
            frames = f.read(dtype="float32", always_2d=True)
            # When the header gives no frame count, the length is only known once decoded.
            _check_duration(frames.shape[0], f.samplerate, name, max_duration_s)
            return np.ascontiguousarray(frames.T), int(f.samplerate)
    except (sf.SoundFileError, RuntimeError):
        return None


def _read_with_pyav(
    data: bytes | BinaryIO, name: str, max_duration_s: float | None
) -> tuple[np.ndarray, int] | None:
    try:
        container = av.open(_rewound(data), mode="r")
    except (av.FFmpegError, ValueError):
        return None
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        check_channels(stream.codec_context.channels, name)
        # Decoders hand out many sample formats (s16 interleaved, fltp, ...); converting every frame
        # to planar float gives (channels, samples) blocks directly and keeps rate and layout.
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        sample_rate = 0
        n_samples = 0
        try:
            for frame in container.decode(stream):
                sample_rate = sample_rate or frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    n_samples += out.samples
                _check_duration(n_samples, sample_rate, name, max_duration_s)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError:
            # A damaged tail: keep what decoded cleanly, like libsndfile does for a truncated wav.
            pass
    if not chunks or not sample_rate:
        return None
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(sample_rate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels into one: (1, samples)."""
    _check_shape(audio)
    return audio.mean(axis=0, keepdims=True, dtype=np.float32)


def to_channels(audio: np.ndarray, n_channels: int) -> np.ndarray:
    """Give ``audio`` exactly ``n_channels`` channels.

    Mono is duplicated into every channel; anything goes to mono by averaging. Other mismatches
    (e.g. 6 channels to 2) fold down to mono first and duplicate: a plain fold-down, not a surround
    downmix matrix, which is enough for conditioning a model.
    """
    _check_shape(audio)
    if n_channels < 1:
        raise ValueError(f"n_channels must be at least 1, got {n_channels}")
    if audio.shape[0] == n_channels:
        return audio
    mono = audio if audio.shape[0] == 1 else to_mono(audio)
    return np.repeat(mono, n_channels, axis=0) if n_channels > 1 else mono


def _check_shape(audio: np.ndarray) -> None:
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"audio must have shape (channels, samples), got {audio.shape}")
