"""Audio in and out in blocks, for inputs too long to hold in memory (the codec's long files).

The block-wise twins of `decode.read_audio`, `resample.resample` and `encode.encode_audio`:
same decoders (soundfile first, PyAV for the rest), same resampler (soxr HQ, here its streaming
form), same containers and subtypes, same error messages. Memory holds a block, not the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from server.audio.decode import SUPPORTED_HINT, check_channels, to_channels
from server.audio.encode import (
    FLAC_SUBTYPES,
    MP3_COMPRESSION_LEVEL,
    OGG_COMPRESSION_LEVEL,
    WAV_SUBTYPES,
    check_mp3,
)
from server.audio.errors import AudioInputError

BLOCK_FRAMES = 1 << 16


@dataclass
class AudioSource:
    """An opened audio file: its rate and channels, then its blocks (read once)."""

    sample_rate: int
    channels: int
    frames_read: int = 0  # counted as blocks are read
    _blocks: Iterator[np.ndarray] | None = field(default=None, repr=False)

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 (channels, n) blocks; non-finite samples become 0. AudioInputError if none."""
        assert self._blocks is not None, "blocks() can be read once"
        source, self._blocks = self._blocks, None
        for block in source:
            if block.shape[1]:
                self.frames_read += block.shape[1]
                yield np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        if self.frames_read == 0:
            raise AudioInputError(f"the uploaded file contains no audio samples (empty or truncated); {SUPPORTED_HINT}")


def open_audio(f: BinaryIO, filename: str | None = None, block_frames: int = BLOCK_FRAMES) -> AudioSource:
    """Open a seekable binary file of audio for block-wise reading; AudioInputError if we can't."""
    name = f"'{filename}'" if filename else "the uploaded file"
    f.seek(0, 2)
    if f.tell() == 0:
        raise AudioInputError(f"{name} is empty; {SUPPORTED_HINT}")
    f.seek(0)
    src = _open_soundfile(f, block_frames)
    if src is None:
        f.seek(0)
        src = _open_pyav(f)
    if src is None:
        raise AudioInputError(f"{name} is not audio we can read; {SUPPORTED_HINT}")
    check_channels(src.channels, name)
    return src


def _open_soundfile(f: BinaryIO, block_frames: int) -> AudioSource | None:
    try:
        sfile = sf.SoundFile(f)
    except (sf.SoundFileError, RuntimeError):
        return None
    # libsndfile reports no samples for some containers ffmpeg reads (as read_audio also finds).
    if sfile.frames == 0:
        sfile.close()
        return None

    def blocks() -> Iterator[np.ndarray]:
        with sfile:
            try:
                for block in sfile.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                    yield np.ascontiguousarray(block.T)
            except (sf.SoundFileError, RuntimeError):
                return  # a damaged tail: keep what decoded, as read_audio does

    return AudioSource(int(sfile.samplerate), int(sfile.channels), _blocks=blocks())


def _open_pyav(f: BinaryIO) -> AudioSource | None:
    try:
        container = av.open(f, mode="r")
    except (av.FFmpegError, ValueError):
        return None
    if not container.streams.audio:
        container.close()
        return None
    stream = container.streams.audio[0]
    rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
    if not rate or not channels:
        container.close()
        return None

    def blocks() -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp")
        with container:
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().astype(np.float32, copy=False)
                for out in resampler.resample(None):
                    yield out.to_ndarray().astype(np.float32, copy=False)
            except av.FFmpegError:
                return

    return AudioSource(int(rate), int(channels), _blocks=blocks())


class StreamResampler:
    """soxr's streaming resampler, with the exact total length of `resample.resample`.

    The output has round(input samples * to / from) samples in all: a few samples are held back
    until the end so that the last block can be trimmed or zero-padded to that length.
    """

    RESERVE = 64

    def __init__(self, from_rate: int, to_rate: int, channels: int):
        self.from_rate, self.to_rate, self.channels = from_rate, to_rate, channels
        self._soxr = None
        if from_rate != to_rate:
            self._soxr = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality="HQ")
        self._n_in = 0
        self._emitted = 0
        self._held = np.zeros((channels, 0), dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        self._n_in += block.shape[1]
        if self._soxr is None:
            out = block
        else:
            out = self._soxr.resample_chunk(np.ascontiguousarray(block.T), last=False).T
        held = np.concatenate([self._held, out], axis=1) if self._held.shape[1] else out
        cut = max(0, held.shape[1] - self.RESERVE)
        ready, self._held = held[:, :cut], held[:, cut:]
        self._emitted += ready.shape[1]
        return np.ascontiguousarray(ready, dtype=np.float32)

    def flush(self) -> np.ndarray:
        tail = self._held
        if self._soxr is not None:
            rest = self._soxr.resample_chunk(np.zeros((0, self.channels), dtype=np.float32), last=True).T
            tail = np.concatenate([tail, rest], axis=1)
        want = round(self._n_in * self.to_rate / self.from_rate) - self._emitted
        if want < 0:  # cannot happen with RESERVE well above soxr's rounding; never emit garbage
            raise RuntimeError("the resampler emitted more samples than the input's length allows")
        if tail.shape[1] < want:
            tail = np.pad(tail, ((0, 0), (0, want - tail.shape[1])))
        self._emitted += want
        return np.ascontiguousarray(tail[:, :want], dtype=np.float32)


def convert(blocks: Iterator[np.ndarray], from_rate: int, to_rate: int, channels: int) -> Iterator[np.ndarray]:
    """Blocks at any rate and channel count to `channels` at `to_rate` (the encoder's input)."""
    resampler = StreamResampler(from_rate, to_rate, channels)
    for block in blocks:
        out = resampler.push(to_channels(block, channels))
        if out.shape[1]:
            yield out
    tail = resampler.flush()
    if tail.shape[1]:
        yield tail


def _sf_kwargs(fmt: str, bit_depth: int) -> dict:
    if fmt == "wav":
        return {"format": "WAV", "subtype": WAV_SUBTYPES[bit_depth]}
    if fmt == "flac":
        if bit_depth not in FLAC_SUBTYPES:
            raise ValueError("flac holds at most 24-bit integer samples")
        return {"format": "FLAC", "subtype": FLAC_SUBTYPES[bit_depth]}
    if fmt == "mp3":
        return {"format": "MP3", "subtype": "MPEG_LAYER_III", "compression_level": MP3_COMPRESSION_LEVEL}
    if fmt == "ogg":
        return {"format": "OGG", "subtype": "VORBIS", "compression_level": OGG_COMPRESSION_LEVEL}
    raise ValueError(f"format must be wav, flac, mp3 or ogg, got {fmt!r}")


def write_blocks(
    blocks: Iterator[np.ndarray], path: Path, sample_rate: int, channels: int, fmt: str, bit_depth: int = 16
) -> int:
    """Encode blocks into a file at `path` as `encode.encode_audio` would; returns frames written.

    Samples are clipped to [-1, 1] except for 32-bit float wav, as there.
    """
    if fmt == "mp3":
        check_mp3(np.zeros((channels, 0), dtype=np.float32), sample_rate)
    clip = not (fmt == "wav" and bit_depth == 32)
    written = 0
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=channels, **_sf_kwargs(fmt, bit_depth)) as out:
        for block in blocks:
            if not block.shape[1]:
                continue
            block = np.nan_to_num(block.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
            if clip:
                block = np.clip(block, -1.0, 1.0)
            out.write(np.ascontiguousarray(block.T))
            written += block.shape[1]
    return written
