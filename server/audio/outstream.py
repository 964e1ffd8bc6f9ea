"""Audio out as it is made: encoders fed block by block that hand back the bytes ready to send.

Every stream's samples come resampled (soxr's streaming resampler, server/audio/stream.py) and, for
integer formats, clipped to [-1, 1], as `encode.encode_audio` does. The containers:

- `wav`: a RIFF/WAVE header whose RIFF and data sizes are 0xFFFFFFFF (what ffmpeg's wav muxer writes
  when its output cannot seek back), then the samples: 16/24-bit PCM or 32-bit float. libsndfile,
  ffmpeg (PyAV) and browsers read such a file to its end.
- `pcm`: the bare samples, interleaved little-endian (s16le, s24le or f32le); the answer's headers
  say the rate, channels and sample format.
- `mp3`: LAME (PyAV's libmp3lame), CBR, frames as they are encoded.
- `ogg`: Ogg Opus (PyAV's libopus), at 48 kHz (Opus's own rate), pages every 200 ms. This ffmpeg has
  no libvorbis encoder and its own Vorbis encoder is experimental and stereo-only, so a streamed ogg
  is Opus; the stored answer of the same job stays Ogg Vorbis (libsndfile).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import av
import numpy as np

from server.audio.stream import StreamResampler

STREAM_FORMATS = ("wav", "pcm", "mp3", "ogg")
OPUS_RATE = 48000
OPENLENGTH = 0xFFFFFFFF
MP3_BIT_RATE = 192_000
OPUS_BIT_RATE = 128_000
OGG_PAGE_US = 200_000

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "application/octet-stream", "mp3": "audio/mpeg", "ogg": "audio/ogg"}
PCM_FORMATS = {16: "s16le", 24: "s24le", 32: "f32le"}


@dataclass(frozen=True)
class StreamedAudio:
    """What a stream is: container, rate, channels and sample depth (PCM and WAV)."""

    format: str
    sample_rate: int
    channels: int
    bit_depth: int = 16

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    @property
    def sample_format(self) -> str | None:
        return PCM_FORMATS[self.bit_depth] if self.format in ("wav", "pcm") else None


def stream_rate(fmt: str, asked: int) -> int:
    """The rate a stream of `fmt` is sent at when `asked` is the rate the request asked for."""
    return OPUS_RATE if fmt == "ogg" else asked


def wav_header(sample_rate: int, channels: int, bit_depth: int) -> bytes:
    """A canonical 44-byte WAVE header with open (0xFFFFFFFF) RIFF and data sizes."""
    tag = 3 if bit_depth == 32 else 1  # WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_PCM
    block = channels * bit_depth // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * block, block, bit_depth)
    return b"".join([b"RIFF", struct.pack("<I", OPENLENGTH), b"WAVE", b"fmt ", struct.pack("<I", len(fmt)), fmt]) + (
        b"data" + struct.pack("<I", OPENLENGTH)
    )


def pcm_bytes(audio: np.ndarray, bit_depth: int) -> bytes:
    """(channels, n) float32 -> interleaved little-endian samples; integers clipped to [-1, 1]."""
    frames = np.ascontiguousarray(audio.T)
    if bit_depth == 32:
        return frames.astype("<f4").tobytes()
    frames = np.clip(frames, -1.0, 1.0)
    if bit_depth == 16:
        return np.round(frames * 32767.0).astype("<i2").tobytes()
    ints = np.round(frames.astype(np.float64) * 8388607.0).astype("<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # the low three bytes of each


class _Sink:
    """Where PyAV's muxer writes: bytes collected until taken; not seekable, so nothing is patched."""

    def __init__(self):
        self.data = bytearray()

    def write(self, b) -> int:
        self.data += b
        return len(b)

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out


class AudioStreamEncoder:
    """(channels, n) float32 blocks at `source_rate` in, the stream's bytes out: `start()` (the header),
    `push(block)`, then `finish()` once."""

    def __init__(self, out: StreamedAudio, source_rate: int):
        self.out = out
        self._resampler = StreamResampler(source_rate, out.sample_rate, out.channels)
        self._container = None
        self._stream = None

    def start(self) -> bytes:
        out = self.out
        if out.format == "wav":
            return wav_header(out.sample_rate, out.channels, out.bit_depth)
        if out.format == "pcm":
            return b""
        self._sink = _Sink()
        layout = "mono" if out.channels == 1 else "stereo"
        options = {"page_duration": str(OGG_PAGE_US)} if out.format == "ogg" else {}
        self._container = av.open(self._sink, mode="w", format=out.format, options=options)
        codec, rate = ("libmp3lame", MP3_BIT_RATE) if out.format == "mp3" else ("libopus", OPUS_BIT_RATE)
        self._stream = self._container.add_stream(codec, rate=out.sample_rate, layout=layout)
        self._stream.codec_context.bit_rate = rate
        return self._sink.take()

    def push(self, block: np.ndarray) -> bytes:
        block = np.nan_to_num(block.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        return self._encode(self._resampler.push(block))

    def finish(self) -> bytes:
        data = self._encode(self._resampler.flush())
        if self._container is None:
            return data
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return data + self._sink.take()

    def _encode(self, audio: np.ndarray) -> bytes:
        if self._container is None:
            return pcm_bytes(audio, self.out.bit_depth) if audio.shape[-1] else b""
        if audio.shape[-1]:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(np.clip(audio, -1.0, 1.0)), format="fltp", layout=self._stream.layout
            )
            frame.sample_rate = self.out.sample_rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()
