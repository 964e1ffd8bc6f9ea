"""File to file: an uploaded audio file to an .ecdc (or JSON codes), an .ecdc to an audio file.

Everything goes through temporary files on disk and blocks in memory, so memory stays bounded
whatever the length. Blocking work: callers run it off the event loop.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lib.schemas import ECDC_MEDIA_TYPE, DecodeOptions
from server.audio import stream as audio_stream
from server.audio.errors import AudioInputError
from server.engine.codec import container
from server.engine.codec.codec import (
    Codec,
    CodeChunk,
    DecodePlan,
    EncodeResult,
    decode_blocks,
    encode_chunks,
    plan_decode,
    write_ecdc_body,
)
from server.engine.codec.errors import EcdcError
from server.engine.errors import UnsupportedRequest

CodecFor = Callable[[str], Codec]


@dataclass
class EncodedFile:
    path: Path  # the answer's body: an .ecdc, or JSON
    media_type: str
    input_bytes: int
    input_frames: int
    input_rate: int
    input_channels: int
    ecdc_bytes: int  # the .ecdc's size (also for JSON answers: the ratio and bitrate are the .ecdc's)
    header: container.Header
    result: EncodeResult
    codec: Codec
    bandwidth_kbps: float

    @property
    def output_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def duration_s(self) -> float:
        return self.header.audio_length / self.codec.layout.sample_rate

    @property
    def compression_ratio(self) -> float:
        """Against 16-bit PCM at the input's own rate and channel count."""
        pcm16 = self.input_frames * self.input_channels * 2
        return pcm16 / self.ecdc_bytes

    @property
    def bitrate_kbps(self) -> float:
        return self.ecdc_bytes * 8 / self.duration_s / 1000 if self.duration_s else 0.0


def _temp_path(suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="audiocraft-codec-", suffix=suffix)
    os.close(fd)
    return Path(name)


class _Counter:
    """A write-only sink that only counts (the .ecdc size of a JSON answer)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def encode_file(
    codec: Codec,
    upload: BinaryIO,
    upload_size: int,
    filename: str | None,
    bandwidth_kbps: float,
    fmt: str = "ecdc",
    on_progress: Callable[[int, int], None] | None = None,
) -> EncodedFile:
    """Decode `upload` block by block, bring it to the model's rate and channels, encode it."""
    codec.codebooks_for(bandwidth_kbps)  # refuse a bandwidth before reading anything
    source = audio_stream.open_audio(upload, filename)
    layout = codec.layout
    blocks = audio_stream.convert(source.blocks(), source.sample_rate, layout.sample_rate, layout.channels)
    body = _temp_path(".body")
    out = _temp_path(".json" if fmt == "json" else ".ecdc")
    try:
        result: dict = {}
        chunks = encode_chunks(codec, blocks, bandwidth_kbps, on_progress, result)
        if fmt == "json":
            counter = _Counter()
            with open(body, "w") as segments_json:
                write_ecdc_body(codec, _json_tee(codec, chunks, segments_json), counter)
            res: EncodeResult = result["value"]
            header = container.Header(layout.name, res.audio_length, res.num_codebooks)
            ecdc_bytes = len(container.encode_header(header)) + counter.size
            _write_json(out, codec, header, bandwidth_kbps, body)
            media_type = "application/json"
        else:
            with open(body, "wb") as sink:
                write_ecdc_body(codec, chunks, sink)
            res = result["value"]
            header = container.Header(layout.name, res.audio_length, res.num_codebooks)
            with open(out, "wb") as f, open(body, "rb") as src:
                f.write(container.encode_header(header))
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            ecdc_bytes = out.stat().st_size
            media_type = ECDC_MEDIA_TYPE
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        body.unlink(missing_ok=True)
    return EncodedFile(
        path=out,
        media_type=media_type,
        input_bytes=upload_size,
        input_frames=source.frames_read,
        input_rate=source.sample_rate,
        input_channels=source.channels,
        ecdc_bytes=ecdc_bytes,
        header=header,
        result=res,
        codec=codec,
        bandwidth_kbps=bandwidth_kbps,
    )


def _json_tee(codec: Codec, chunks: Iterator[CodeChunk], out) -> Iterator[CodeChunk]:
    """Pass chunks on to the .ecdc writer while writing each segment as JSON into `out`.

    A segment's codes are kept until it ends (as int16: 2.9 MB for 10 minutes of 24 kHz at 24 kbps,
    where the whole file is one segment), then written one codebook row at a time.
    """
    layout = codec.layout
    parts: list[np.ndarray] = []
    scale: float | None = None
    first = True
    for ch in chunks:
        if ch.first:
            parts, scale = [], ch.scale
        parts.append(ch.codes.astype(np.int16))
        if ch.last:
            codes = np.concatenate(parts, axis=1)
            parts = []
            offset = ch.segment * (layout.segment_stride or 0)
            head = {"offset": offset, "length": ch.length, "scale": scale}
            out.write(("" if first else ",") + json.dumps(head, separators=(",", ":"))[:-1] + ',"codes":[')
            for k, row in enumerate(codes):
                out.write(("," if k else "") + json.dumps(row.tolist(), separators=(",", ":")))
            out.write("]}")
            first = False
        yield ch


def _write_json(path: Path, codec: Codec, header: container.Header, bandwidth: float, segments: Path) -> None:
    layout = codec.layout
    meta = {
        "model": codec.spec.name,
        "header_model": layout.name,
        "sample_rate": layout.sample_rate,
        "channels": layout.channels,
        "frame_rate": layout.sample_rate / layout.hop_length,
        "bandwidth_kbps": bandwidth,
        "num_codebooks": header.num_codebooks,
        "codebook_size": 1 << layout.bits,
        "audio_length": header.audio_length,
        "duration_s": header.audio_length / layout.sample_rate,
        "segment_length": layout.segment_length,
        "segment_stride": layout.segment_stride,
    }
    head = json.dumps(meta, separators=(",", ":"))[:-1]  # leave the object open for "segments"
    with open(path, "w") as f, open(segments) as src:
        f.write(head + ',"segments":[')
        while chunk := src.read(1 << 20):
            f.write(chunk)
        f.write("]}")


# -------------------------------------------------------------------------------------------


@dataclass
class DecodedFile:
    path: Path
    media_type: str
    sample_rate: int
    channels: int
    frames: int
    codec: Codec
    header: container.Header
    extension: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def open_ecdc(codec_for: CodecFor, upload: BinaryIO, size: int) -> DecodePlan:
    """Read and check the header and the body's size; EcdcError before any decoding when wrong."""
    upload.seek(0)
    header, used = container.read_header(upload)
    codec = codec_for(container.catalogue_name(header.model))
    return plan_decode(codec, header, size - used, used)


def decode_file(
    plan: DecodePlan,
    upload: BinaryIO,
    options: DecodeOptions,
    max_loudness_s: float,
    on_progress: Callable[[int, int], None] | None = None,
) -> DecodedFile:
    """Decode to an audio file on disk as `options` ask (format, rate, depth, normalisation)."""
    from server.audio.encode import FILE_EXTENSIONS, MEDIA_TYPES

    codec = plan.codec
    native = codec.layout.sample_rate
    rate = native if options.sample_rate == "native" else int(options.sample_rate)
    channels = codec.layout.channels
    if options.normalize == "loudness" and plan.audio_length / native > max_loudness_s:
        raise UnsupportedRequest(
            f"normalize=loudness measures the whole file in memory, which is available up to "
            f"{max_loudness_s:g} s; this file is {plan.audio_length / native:.1f} s",
            field="normalize",
            hint="use normalize=peak or none for long files",
        )
    upload.seek(plan.body_offset)
    out = _temp_path(FILE_EXTENSIONS[options.format])
    try:
        blocks = _resampled(decode_blocks(plan, upload, on_progress), native, rate, channels)
        if options.normalize == "none":
            frames = audio_stream.write_blocks(blocks, out, rate, channels, options.format, options.bit_depth)
        elif options.normalize == "peak":
            frames = _write_peak_normalised(blocks, out, rate, channels, options)
        else:
            frames = _write_loudness_normalised(blocks, out, rate, options)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return DecodedFile(
        path=out,
        media_type=MEDIA_TYPES[options.format],
        sample_rate=rate,
        channels=channels,
        frames=frames,
        codec=codec,
        header=plan.header,
        extension=FILE_EXTENSIONS[options.format],
    )


def _resampled(blocks: Iterator[np.ndarray], native: int, rate: int, channels: int) -> Iterator[np.ndarray]:
    if rate == native:
        yield from blocks
        return
    yield from audio_stream.convert(blocks, native, rate, channels)


def _write_peak_normalised(blocks: Iterator[np.ndarray], out: Path, rate: int, channels: int, options) -> int:
    """Two passes over a float32 spool on disk: find the peak, then scale and encode."""
    from server.audio.loudness import PEAK_DBFS

    spool = _temp_path(".f32")
    try:
        peak = 0.0
        with open(spool, "wb") as f:
            for block in blocks:
                block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
                if block.size:
                    peak = max(peak, float(np.max(np.abs(block))))
                f.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        gain = 10.0 ** (PEAK_DBFS / 20.0) / peak if peak > 0 else 1.0

        def scaled() -> Iterator[np.ndarray]:
            step = audio_stream.BLOCK_FRAMES * channels * 4
            with open(spool, "rb") as f:
                while raw := f.read(step):
                    frames = np.frombuffer(raw, dtype=np.float32).reshape(-1, channels).T
                    yield (frames * np.float32(gain)).astype(np.float32)

        return audio_stream.write_blocks(scaled(), out, rate, channels, options.format, options.bit_depth)
    finally:
        spool.unlink(missing_ok=True)


def _write_loudness_normalised(blocks: Iterator[np.ndarray], out: Path, rate: int, options) -> int:
    """In memory, through the generation path's own normalise-and-encode (bounded by duration)."""
    from server.audio.encode import encode_audio
    from server.audio.loudness import normalize

    parts = list(blocks)
    audio = np.concatenate(parts, axis=1)
    audio = normalize(audio, rate, "loudness")
    data, _ = encode_audio(audio, rate, options.format, options.bit_depth)
    out.write_bytes(data)
    return int(audio.shape[1])


__all__ = ["AudioInputError", "DecodedFile", "EcdcError", "EncodedFile", "decode_file", "encode_file", "open_ecdc"]
