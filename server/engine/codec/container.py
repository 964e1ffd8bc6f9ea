"""The `.ecdc` container, as the reference `encodec` package (0.1.x, `use_lm=False`) lays it out.

    b"ECDC"  uint8 version (0)  uint32 big-endian header length  header (UTF-8 JSON)
    then, for each segment of the audio:
        float32 big-endian scale            only for models that normalise (the 48 kHz one)
        codes, frame by frame, codebook by codebook, each log2(codebook size) bits wide,
        packed least significant bit first into bytes; the last byte of a segment is padded
        with zero bits, so every segment starts on a byte boundary

The header is `{"m": model name, "al": audio length in samples, "nc": codebooks per frame,
"lm": false}`. A segment is the whole audio for models without segments (24 kHz, 32 kHz) and
`segment` seconds every `segment * (1 - overlap)` seconds for the others (48 kHz: 1 s every
0.99 s). Nothing in the file says how many frames a segment holds: a reader works it out from
`al` and the model, which is why the writer and the reader here share `Layout`.

Written from the format's description and checked against the reference reader in the tests;
no code of the reference package lives here.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from pydantic_core import from_json

from server.engine.codec.errors import EcdcError

MAGIC = b"ECDC"
VERSION = 0
_PREAMBLE = struct.Struct("!4sBI")
_SCALE = struct.Struct("!f")
# A real header is ~60 bytes. Anything far larger is a corrupt length field, not a header.
MAX_HEADER_BYTES = 64 * 1024
# Past any file a body can hold (10^15 samples are 1300 years at 24 kHz), and within what floats count
# exactly: the header's length enters float arithmetic (Layout.reader_frames, durations).
MAX_AUDIO_LENGTH = 2**53

# Names the reference package writes in `m`, and the catalogue entry each one means. The
# reference knows only the first two; encodec_32khz (MusicGen's codec, the hub repo
# facebook/encodec_32khz) follows the same pattern and is ours: the reference refuses it.
HEADER_NAMES = {
    "encodec_24khz": "encodec-24khz",
    "encodec_48khz": "encodec-48khz",
    "encodec_32khz": "encodec-32khz",
}
CATALOGUE_TO_HEADER = {v: k for k, v in HEADER_NAMES.items()}


@dataclass(frozen=True)
class Layout:
    """The framing facts of one model that the container depends on."""

    name: str  # as written in the header's "m"
    sample_rate: int
    channels: int
    hop_length: int
    bits: int  # per code: log2(codebook size)
    max_codebooks: int
    normalize: bool  # a float32 scale precedes each segment
    segment_length: int | None = None  # samples; None = the whole audio is one segment
    segment_stride: int | None = None

    @property
    def frame_rate(self) -> int:
        # As the reference computes it (ceil, an integer): it enters the frame-count formula below.
        return math.ceil(self.sample_rate / self.hop_length)

    def segments(self, audio_length: int) -> Iterator[tuple[int, int]]:
        """(offset, length) of each segment, in samples."""
        for count, length, first in self.segment_runs(audio_length):
            for k in range(count):
                yield (first + k) * (self.segment_stride or 0), length

    def segment_runs(self, audio_length: int) -> list[tuple[int, int, int]]:
        """The segments as runs of equal length: (count, length, index of the first), in order.

        At most 1 + segment_length / segment_stride runs whatever the audio length (all segments
        but the last few are whole), so what a header announces is worked out in O(1).
        """
        if audio_length <= 0:
            return []
        if self.segment_length is None or self.segment_stride is None:
            return [(1, audio_length, 0)]
        seg, stride = self.segment_length, self.segment_stride
        count = -(-audio_length // stride)  # every offset 0, stride, ... below the length starts one
        whole = 0 if audio_length < seg else min(count, (audio_length - seg) // stride + 1)
        runs = [(whole, seg, 0)] if whole else []
        return runs + [(1, audio_length - k * stride, k) for k in range(whole, count)]

    def encoder_frames(self, segment_length: int) -> int:
        """Frames the encoder makes for a segment: one per started hop."""
        return -(-segment_length // self.hop_length)

    def reader_frames(self, segment_length: int) -> int:
        """Frames the reference reader expects: ceil(length / rate * frame_rate), in floating point.

        For about 1.5 lengths in 10,000 (24 kHz: 6720, 13440, ... samples) the float product lands
        just above an integer and this is one more than `encoder_frames`; the reference's own
        writer then writes a file its reader cannot read. Our writer repeats the segment's last
        frame once in that case, so that every file it writes reads back everywhere.
        """
        return int(math.ceil(segment_length / self.sample_rate * self.frame_rate))

    def frames_written(self, segment_length: int) -> int:
        return max(self.encoder_frames(segment_length), self.reader_frames(segment_length))

    def code_bytes(self, frames: int, codebooks: int) -> int:
        return -(-frames * codebooks * self.bits // 8)

    def segment_bytes(self, frames: int, codebooks: int) -> int:
        return (_SCALE.size if self.normalize else 0) + self.code_bytes(frames, codebooks)

    def body_bytes(self, audio_length: int, codebooks: int) -> int:
        """Size of everything after the header, as our writer makes it."""
        return sum(self.segment_bytes(self.frames_written(n), codebooks) for _, n in self.segments(audio_length))

    def segment_frames(self, audio_length: int, codebooks: int, body_size: int) -> list[int]:
        """Frames of each segment of a body of `body_size` bytes, or EcdcError if it can't be one.

        Two counts are possible per segment (see `reader_frames`); they differ, if at all, only in
        the last segment of the 48 kHz model or the single segment of the others, so the body's
        size tells which one the writer used. What the header announces is checked against the
        body's size in O(1) before the list (one entry per segment, so bounded by the body) is made.
        """
        runs = self.segment_runs(audio_length)
        if not runs:
            raise EcdcError("the file holds no audio (its header says al = 0)", code="empty_ecdc")
        count, last, index = runs.pop()
        if count > 1:
            runs.append((count - 1, last, index))
        segments = sum(n for n, _, _ in runs) + 1
        fixed = sum(n * self.segment_bytes(self.encoder_frames(length), codebooks) for n, length, _ in runs)
        candidates = sorted({self.encoder_frames(last), self.reader_frames(last)})
        want = fixed + self.segment_bytes(candidates[0], codebooks)
        if body_size < want:
            raise EcdcError(
                f"the file is truncated: its header announces {audio_length} samples in "
                f"{segments} segment(s), which take {want} bytes after the header, but only "
                f"{body_size} are there",
                code="truncated_ecdc",
                hint="send the whole file again",
            )
        for frames in candidates:
            if fixed + self.segment_bytes(frames, codebooks) == body_size:
                head = [f for n, length, _ in runs for f in [self.encoder_frames(length)] * n]
                return [*head, frames]
        raise EcdcError(
            f"the file is corrupt: {body_size - want} unexpected byte(s) after the last segment "
            f"(the header announces {audio_length} samples, {codebooks} codebooks)",
            code="corrupt_ecdc",
        )


@dataclass(frozen=True)
class Header:
    model: str  # the header name, e.g. encodec_24khz
    audio_length: int
    num_codebooks: int
    use_lm: bool = False

    def to_json(self) -> dict:
        # Key order and spacing as the reference writes them (json.dumps defaults).
        return {"m": self.model, "al": self.audio_length, "nc": self.num_codebooks, "lm": self.use_lm}


def encode_header(header: Header) -> bytes:
    meta = json.dumps(header.to_json()).encode("utf-8")
    return _PREAMBLE.pack(MAGIC, VERSION, len(meta)) + meta


def read_header(f: BinaryIO) -> tuple[Header, int]:
    """Parse the preamble and JSON header at the start of `f`; returns (header, bytes read)."""
    pre = f.read(_PREAMBLE.size)
    if not pre:
        raise EcdcError("the upload is empty; send an .ecdc file", code="empty_upload")
    if not MAGIC.startswith(pre[:4]):
        raise EcdcError(
            "this is not an .ecdc file (it does not start with ECDC)",
            code="not_ecdc",
            hint="send a file made by /api/encode or by the encodec package",
        )
    if len(pre) < _PREAMBLE.size:
        raise EcdcError("the file is truncated inside its header", code="truncated_ecdc")
    _, version, size = _PREAMBLE.unpack(pre)
    if version != VERSION:
        raise EcdcError(f".ecdc version {version} is not supported (only version {VERSION})", code="unsupported_ecdc")
    if size > MAX_HEADER_BYTES:
        raise EcdcError(f"the file is corrupt: its header claims {size} bytes", code="corrupt_ecdc")
    raw = f.read(size)
    if len(raw) < size:
        raise EcdcError("the file is truncated inside its header", code="truncated_ecdc")
    try:
        # pydantic-core's parser: strict UTF-8, no lone surrogates, bounded nesting and numbers.
        meta = from_json(raw)
    except ValueError:
        raise EcdcError("the file is corrupt: its header is not JSON", code="corrupt_ecdc") from None
    return _check_meta(meta), _PREAMBLE.size + size


def _check_meta(meta: object) -> Header:
    if not isinstance(meta, dict):
        raise EcdcError("the file is corrupt: its header is not a JSON object", code="corrupt_ecdc")
    missing = [k for k in ("m", "al", "nc") if k not in meta]
    if missing:
        raise EcdcError(f"the file's header lacks {', '.join(missing)}", code="corrupt_ecdc")
    model, al, nc, lm = meta["m"], meta["al"], meta["nc"], meta.get("lm", False)
    if not isinstance(model, str):
        raise EcdcError("the file's header names no model ('m' is not a string)", code="corrupt_ecdc")
    # bool is an int in Python; true/false are never lengths.
    if not isinstance(al, int) or isinstance(al, bool) or not 0 <= al <= MAX_AUDIO_LENGTH:
        raise EcdcError(f"the file's header has an invalid audio length: {_short(al)}", code="corrupt_ecdc")
    if not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= 1024:
        raise EcdcError(f"the file's header has an invalid codebook count: {_short(nc)}", code="corrupt_ecdc")
    if not isinstance(lm, bool):
        raise EcdcError(f"the file's header has an invalid 'lm' flag: {lm!r}", code="corrupt_ecdc")
    return Header(model=model, audio_length=al, num_codebooks=nc, use_lm=lm)


def _short(value: object) -> str:
    """A header value for a message: quoted, and cut to size (it is whatever the file says)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def catalogue_name(header_name: str) -> str:
    """The catalogue entry for a header's model name; EcdcError for a model we don't know."""
    if header_name in HEADER_NAMES:
        return HEADER_NAMES[header_name]
    if header_name in CATALOGUE_TO_HEADER:  # be lenient with our own catalogue spelling
        return header_name
    raise EcdcError(
        f"the file was made with the model {_short(header_name)}, which this service does not have",
        code="unknown_codec_model",
        field="m",
        hint="known: " + ", ".join(HEADER_NAMES),
    )


def pack_scale(scale: float) -> bytes:
    return _SCALE.pack(scale)


def unpack_scale(data: bytes) -> float:
    (value,) = _SCALE.unpack(data)
    if not math.isfinite(value) or value <= 0.0:
        raise EcdcError(f"the file is corrupt: a segment's scale is {value}", code="corrupt_ecdc")
    return value


class BitWriter:
    """Packs codes of `bits` bits LSB-first, as the reference BitPacker; vectorised with numpy."""

    def __init__(self, bits: int):
        if not 1 <= bits <= 32:
            raise ValueError(f"bits must be between 1 and 32, got {bits}")
        self.bits = bits
        self._shifts = np.arange(bits, dtype=np.uint64)
        self._pending = np.zeros(0, dtype=np.uint8)  # fewer than 8 bits left over

    def write(self, values: np.ndarray) -> bytes:
        """The bytes completed by `values` (any integer array, taken in C order)."""
        flat = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= 1 << self.bits):
            raise ValueError(f"codes must be in [0, {1 << self.bits})")
        bits = ((flat.astype(np.uint64)[:, None] >> self._shifts) & np.uint64(1)).astype(np.uint8).reshape(-1)
        bits = np.concatenate([self._pending, bits])
        whole = bits.size // 8 * 8
        self._pending = bits[whole:]
        return np.packbits(bits[:whole], bitorder="little").tobytes()

    def flush(self) -> bytes:
        """The last partial byte, zero-padded; the writer is then at a byte boundary again."""
        if not self._pending.size:
            return b""
        out = np.packbits(self._pending, bitorder="little").tobytes()
        self._pending = np.zeros(0, dtype=np.uint8)
        return out


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of `bits` bits packed LSB-first in `data`, as int64."""
    need = -(-count * bits // 8)
    if len(data) < need:
        raise EcdcError("the file is truncated inside its codes", code="truncated_ecdc")
    raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need), bitorder="little")
    raw = raw[: count * bits].reshape(count, bits).astype(np.int64)
    return raw @ (np.int64(1) << np.arange(bits, dtype=np.int64))
