"""EnCodec as a codec: audio blocks in, codes out (and back), in bounded memory.

Two ways of cutting the audio, as in the reference `encodec` package:

- **No segments** (24 kHz, 32 kHz): the reference encodes the whole file in one piece. Here the
  encoder and decoder run as streams (`stream.py`) over fixed chunks, which gives the one-piece
  result (equal up to float rounding, ~1e-7) with memory set by the chunk size. Inputs up to one
  chunk long run in one piece. The chunk size is fixed, so the same input always gives the same
  bytes.
- **Segments** (48 kHz): 1 s segments every 0.99 s, each normalised to its own RMS (the scale is
  stored), encoded and decoded on its own; decoding cross-fades the 10 ms overlaps linearly, as
  the reference does. Memory holds one segment.

Nothing here knows about HTTP or files: blocks are float32 numpy arrays (channels, samples) at the
model's rate, with the model's channel count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch

from lib.catalogue import ModelSpec
from server.engine.codec import container, stream
from server.engine.codec.container import BitWriter, Header, Layout
from server.engine.codec.errors import EcdcError
from server.engine.errors import UnsupportedRequest
from server.models.loaded import CodecModel

# The chunk the streaming encoder/decoder works on, in seconds of audio. Larger is a little faster
# and uses more memory: on the real 24 kHz model, 5 s chunks hold ~100 MB of activations.
CHUNK_S = 5.0
Progress = Callable[[int, int], None]  # (samples done, samples in all; 0 when unknown)


def layout_for(spec: ModelSpec, config: Any) -> Layout:
    """The container layout of a loaded model, from its transformers config."""
    bits = int(math.log2(config.codebook_size))
    if 1 << bits != config.codebook_size:
        raise UnsupportedRequest(f"{spec.name}: codebook size {config.codebook_size} is not a power of 2")
    return Layout(
        name=container.CATALOGUE_TO_HEADER[spec.name],
        sample_rate=int(config.sampling_rate),
        channels=int(config.audio_channels),
        hop_length=int(np.prod(config.upsampling_ratios)),
        bits=bits,
        max_codebooks=int(config.num_quantizers),
        normalize=bool(config.normalize),
        segment_length=config.chunk_length,
        segment_stride=config.chunk_stride,
    )


@dataclass
class Codec:
    """A loaded EnCodec with what the container needs to know about it."""

    spec: ModelSpec
    model: Any  # transformers EncodecModel, eval mode, float32
    layout: Layout
    device: torch.device

    @classmethod
    def of(cls, loaded: CodecModel) -> Codec:
        model = loaded.model
        return cls(spec=loaded.spec, model=model, layout=layout_for(loaded.spec, model.config), device=loaded.device)

    @property
    def bandwidths(self) -> tuple[float, ...]:
        return tuple(float(b) for b in self.model.config.target_bandwidths)

    def codebooks_for(self, bandwidth_kbps: float) -> int:
        if bandwidth_kbps not in self.bandwidths:
            valid = ", ".join(f"{b:g}" for b in self.bandwidths)
            raise UnsupportedRequest(
                f"{self.spec.name} does not offer {bandwidth_kbps:g} kbps; valid values: {valid}",
                field="bandwidth_kbps",
                hint=f"valid values: {valid}",
            )
        return int(self.model.quantizer.get_num_quantizers_for_bandwidth(bandwidth_kbps))

    @property
    def chunk_samples(self) -> int:
        # A whole number of frames, so chunk boundaries fall on frame boundaries.
        hop = self.layout.hop_length
        return max(1, round(CHUNK_S * self.layout.sample_rate / hop)) * hop

    def _tensor(self, audio: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(self.device)


@dataclass
class CodeChunk:
    """Codes of consecutive frames of one segment: (codebooks, frames) int64."""

    segment: int
    codes: np.ndarray
    scale: float | None = None  # on a segment's first chunk, for models that normalise
    first: bool = False
    last: bool = False
    length: int | None = None  # on a segment's last chunk: the segment's length in samples


@dataclass
class EncodeResult:
    audio_length: int
    num_codebooks: int
    segments: int
    frames: int  # frames the encoder made (without the reader padding, see Layout.reader_frames)
    seconds: float


def _check_block(block: np.ndarray, channels: int) -> np.ndarray:
    if block.ndim != 2 or block.shape[0] != channels:
        raise ValueError(f"expected blocks of shape ({channels}, n), got {block.shape}")
    return block


def encode_chunks(
    codec: Codec,
    blocks: Iterable[np.ndarray],
    bandwidth_kbps: float,
    on_progress: Progress | None = None,
    result: dict | None = None,
) -> Iterator[CodeChunk]:
    """Encode audio blocks; yields codes as they are made. `result` gets the audio length etc."""
    nq = codec.codebooks_for(bandwidth_kbps)
    started = time.perf_counter()
    counts = {"audio_length": 0, "segments": 0, "frames": 0}
    if codec.layout.segment_length is None:
        chunks = _encode_whole(codec, blocks, bandwidth_kbps, counts, on_progress)
    else:
        chunks = _encode_segments(codec, blocks, bandwidth_kbps, counts, on_progress)
    yield from _inference(chunks)
    if result is not None:
        result["value"] = EncodeResult(num_codebooks=nq, seconds=time.perf_counter() - started, **counts)


def _inference(gen: Iterator) -> Iterator:
    """Run each step of `gen` under inference mode, without leaking the mode to the consumer."""
    while True:
        with torch.inference_mode():
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


def _codes(codes: torch.Tensor) -> np.ndarray:
    # quantizer.encode gives (codebooks, batch, frames); batch is 1.
    return codes[:, 0].cpu().numpy().astype(np.int64)


def _encode_whole(
    codec: Codec, blocks: Iterable[np.ndarray], bandwidth: float, counts: dict, on_progress: Progress | None
) -> Iterator[CodeChunk]:
    model, chunk = codec.model, codec.chunk_samples
    pending: list[np.ndarray] = []
    pending_len = 0
    encoder: stream.Chain | None = None
    first = True

    def quantize(emb: torch.Tensor | None) -> CodeChunk | None:
        nonlocal first
        if emb is None or not emb.shape[-1]:
            return None
        out = CodeChunk(segment=0, codes=_codes(model.quantizer.encode(emb, bandwidth)), first=first)
        first = False
        counts["frames"] += out.codes.shape[1]
        return out

    # One chunk is held back: which chunk is the last is known only when the audio ends (the
    # flush may add frames, or none when the length is a whole number of chunks).
    held: CodeChunk | None = None

    def hold(out: CodeChunk | None) -> CodeChunk | None:
        nonlocal held
        if out is None:
            return None
        ready, held = held, out
        return ready

    for block in blocks:
        block = _check_block(block, codec.layout.channels)
        if not block.shape[1]:
            continue
        counts["audio_length"] += block.shape[1]
        pending.append(block)
        pending_len += block.shape[1]
        # Start streaming only past one chunk: shorter inputs run in one piece below.
        while pending_len > chunk or (encoder is not None and pending_len >= chunk):
            joined = np.concatenate(pending, axis=1)
            piece, rest = joined[:, :chunk], joined[:, chunk:]
            pending, pending_len = ([rest] if rest.shape[1] else []), rest.shape[1]
            if encoder is None:
                encoder = stream.streaming(model.encoder)
            ready = hold(quantize(encoder.push(codec._tensor(piece))))
            if ready is not None:
                yield ready
            if on_progress:
                on_progress(counts["audio_length"] - pending_len, 0)
    if counts["audio_length"] == 0:
        return
    if encoder is None:
        outs = [quantize(model.encoder(codec._tensor(np.concatenate(pending, axis=1))))]
    else:
        outs = []
        if pending_len:
            outs.append(quantize(encoder.push(codec._tensor(np.concatenate(pending, axis=1)))))
        outs.append(quantize(encoder.flush()))
    for out in outs:
        ready = hold(out)
        if ready is not None:
            yield ready
    assert held is not None, "the encoder made no frames"
    held.last = True
    held.length = counts["audio_length"]
    counts["segments"] = 1
    yield held
    if on_progress:
        on_progress(counts["audio_length"], counts["audio_length"])


def _encode_segments(
    codec: Codec, blocks: Iterable[np.ndarray], bandwidth: float, counts: dict, on_progress: Progress | None
) -> Iterator[CodeChunk]:
    model = codec.model
    seg_len, stride = codec.layout.segment_length, codec.layout.segment_stride
    assert seg_len is not None and stride is not None
    buf = np.zeros((codec.layout.channels, 0), dtype=np.float32)  # audio from the next segment's offset
    index = 0

    def encode(segment: np.ndarray) -> CodeChunk:
        nonlocal index
        codes, scale = model._encode_frame(codec._tensor(segment), bandwidth)
        # _encode_frame gives (batch, codebooks, frames) and a (batch, 1) scale, or None.
        out = CodeChunk(
            segment=index,
            codes=codes[0].cpu().numpy().astype(np.int64),
            scale=None if scale is None else float(scale.reshape(-1)[0]),
            first=True,
            last=True,
            length=segment.shape[1],
        )
        index += 1
        counts["frames"] += out.codes.shape[1]
        return out

    for block in blocks:
        block = _check_block(block, codec.layout.channels)
        counts["audio_length"] += block.shape[1]
        buf = np.concatenate([buf, block], axis=1) if buf.shape[1] else block
        while buf.shape[1] >= seg_len:
            yield encode(buf[:, :seg_len])
            buf = buf[:, stride:]
            if on_progress:
                on_progress(counts["audio_length"] - buf.shape[1], 0)
    # The segments that reach past the end: every offset < length starts one (as range() does).
    while buf.shape[1] and (index * stride < counts["audio_length"]):
        yield encode(buf[:, :seg_len])
        buf = buf[:, stride:]
    counts["segments"] = index
    if on_progress:
        on_progress(counts["audio_length"], counts["audio_length"])


def write_ecdc_body(codec: Codec, chunks: Iterable[CodeChunk], sink: BinaryIO) -> int:
    """Write the segments (scales and packed codes) to `sink`; returns the bytes written.

    Each segment gets as many frames as the reference reader will look for (see
    Layout.reader_frames): when that is one more than the encoder made, the segment's last frame
    is written twice, so the file the header describes is complete and reads back everywhere.
    """
    layout = codec.layout
    written = 0
    writer = BitWriter(layout.bits)
    last_frame: np.ndarray | None = None
    frames = 0

    def out(data: bytes) -> None:
        nonlocal written
        if data:
            sink.write(data)
            written += len(data)

    for ch in chunks:
        if ch.first:
            frames = 0
            if layout.normalize:
                if ch.scale is None:
                    raise ValueError("a normalising model gave no scale")
                out(container.pack_scale(ch.scale))
        if ch.codes.shape[1]:
            out(writer.write(ch.codes.T))  # frame by frame, codebook by codebook
            last_frame = ch.codes[:, -1:]
            frames += ch.codes.shape[1]
        if ch.last:
            assert ch.length is not None
            if layout.reader_frames(ch.length) > frames and last_frame is not None:
                out(writer.write(last_frame.T))
            out(writer.flush())
    return written


def encode_to_ecdc(
    codec: Codec,
    blocks: Iterable[np.ndarray],
    bandwidth_kbps: float,
    sink: BinaryIO,
    on_progress: Progress | None = None,
) -> tuple[Header, EncodeResult]:
    """Encode into `sink` (the body: everything after the header); returns the header to put first."""
    result: dict = {}
    write_ecdc_body(codec, encode_chunks(codec, blocks, bandwidth_kbps, on_progress, result), sink)
    res: EncodeResult = result["value"]
    if res.audio_length == 0:
        raise ValueError("no audio to encode")
    return Header(model=codec.layout.name, audio_length=res.audio_length, num_codebooks=res.num_codebooks), res


# -------------------------------------------------------------------------------------------
# Decoding


@dataclass
class DecodePlan:
    header: Header
    codec: Codec
    segment_frames: list[int]
    body_offset: int

    @property
    def audio_length(self) -> int:
        return self.header.audio_length


def plan_decode(codec: Codec, header: Header, body_size: int, body_offset: int) -> DecodePlan:
    """Check that a body of `body_size` bytes is what `header` announces; EcdcError if not."""
    if header.use_lm:
        raise EcdcError(
            "the file is entropy-coded with the encodec language model (lm: true), which this service does not have",
            code="unsupported_ecdc",
            hint="encode it again with use_lm=False (the encodec CLI's default without -l)",
        )
    if header.num_codebooks > codec.layout.max_codebooks:
        raise EcdcError(
            f"the file's header says {header.num_codebooks} codebooks; {codec.spec.name} has at most "
            f"{codec.layout.max_codebooks}",
            code="corrupt_ecdc",
        )
    frames = codec.layout.segment_frames(header.audio_length, header.num_codebooks, body_size)
    return DecodePlan(header=header, codec=codec, segment_frames=frames, body_offset=body_offset)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise EcdcError("the file is truncated inside its codes", code="truncated_ecdc")
    return data


def decode_blocks(plan: DecodePlan, body: BinaryIO, on_progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Audio blocks (channels, samples) float32 at the model's rate, exactly `al` samples in all."""
    codec = plan.codec
    total = plan.audio_length
    emitted = 0
    gen = _decode_whole(plan, body) if codec.layout.segment_length is None else _decode_segments(plan, body)
    for block in _inference(gen):
        take = min(block.shape[-1], total - emitted)
        if take > 0:
            emitted += take
            yield np.ascontiguousarray(block[0, :, :take].cpu().numpy(), dtype=np.float32)
            if on_progress:
                on_progress(emitted, total)
    if emitted < total:  # cannot happen with a consistent model; never give a short file silently
        raise RuntimeError(f"the decoder made {emitted} samples, {total} expected")


def _decode_codes(codec: Codec, raw: bytes, frames: int, nc: int) -> torch.Tensor:
    codes = container.unpack_codes(raw, codec.layout.bits, frames * nc).reshape(frames, nc).T
    # (codebooks, batch, frames) for quantizer.decode.
    return torch.from_numpy(np.ascontiguousarray(codes))[:, None, :].to(codec.device)


def _decode_whole(plan: DecodePlan, body: BinaryIO) -> Iterator[torch.Tensor]:
    codec, nc = plan.codec, plan.header.num_codebooks
    (frames,) = plan.segment_frames
    model = codec.model
    # Chunks of a multiple of 8 frames start on byte boundaries: frames * nc * bits % 8 == 0.
    chunk_frames = max(8, codec.chunk_samples // codec.layout.hop_length // 8 * 8)
    if frames <= chunk_frames:
        raw = _read_exact(body, codec.layout.code_bytes(frames, nc))
        yield model.decoder(model.quantizer.decode(_decode_codes(codec, raw, frames, nc)))
        return
    decoder = stream.streaming(model.decoder)
    done = 0
    while done < frames:
        n = min(chunk_frames, frames - done)
        raw = _read_exact(body, codec.layout.code_bytes(n, nc))
        yield decoder.push(model.quantizer.decode(_decode_codes(codec, raw, n, nc)))
        done += n
    tail = decoder.flush()
    if tail is not None:
        yield tail


def _decode_segments(plan: DecodePlan, body: BinaryIO) -> Iterator[torch.Tensor]:
    """Decode 1 s segments and cross-fade them as the reference's linear overlap-add does."""
    codec, nc = plan.codec, plan.header.num_codebooks
    stride = codec.layout.segment_stride
    assert stride is not None
    model = codec.model
    weight: torch.Tensor | None = None
    acc: torch.Tensor | None = None  # weighted sum over [acc_start, acc_start + len)
    acc_w: torch.Tensor | None = None
    acc_start = 0
    for i, frames in enumerate(plan.segment_frames):
        scale = None
        if codec.layout.normalize:
            scale = container.unpack_scale(_read_exact(body, 4))
        raw = _read_exact(body, codec.layout.code_bytes(frames, nc))
        out = model.decoder(model.quantizer.decode(_decode_codes(codec, raw, frames, nc)))
        if scale is not None:
            out = out * torch.tensor(scale, dtype=out.dtype, device=out.device).view(-1, 1, 1)
        n = out.shape[-1]
        if weight is None:
            # The fade is built for the first segment's length and cut for shorter ones.
            t = torch.linspace(0, 1, n + 2, device=out.device, dtype=out.dtype)[1:-1]
            weight = 0.5 - (t - 0.5).abs()
            acc = torch.zeros(*out.shape[:-1], 0, device=out.device, dtype=out.dtype)
            acc_w = torch.zeros(0, device=out.device, dtype=out.dtype)
        assert acc is not None and acc_w is not None
        offset = i * stride
        end = offset + n
        grow = end - (acc_start + acc.shape[-1])
        if grow > 0:
            acc = torch.cat([acc, acc.new_zeros(*acc.shape[:-1], grow)], dim=-1)
            acc_w = torch.cat([acc_w, acc_w.new_zeros(grow)])
        lo = offset - acc_start
        acc[..., lo : lo + n] += weight[:n] * out
        acc_w[lo : lo + n] += weight[:n]
        last = i == len(plan.segment_frames) - 1
        # Samples before the next segment's offset get nothing more.
        ready = acc.shape[-1] if last else min(acc.shape[-1], offset + stride - acc_start)
        if ready > 0:
            yield acc[..., :ready] / acc_w[:ready]
            acc, acc_w = acc[..., ready:], acc_w[ready:]
            acc_start += ready


def read_plan(codec_for: Callable[[str], Codec], f: BinaryIO, size: int) -> tuple[DecodePlan, BinaryIO]:
    """Parse the header at the start of `f` (a seekable file of `size` bytes) and plan its decoding."""
    header, used = container.read_header(f)
    name = container.catalogue_name(header.model)
    codec = codec_for(name)
    return plan_decode(codec, header, size - used, used), f


__all__ = [
    "Codec",
    "CodeChunk",
    "DecodePlan",
    "EncodeResult",
    "decode_blocks",
    "encode_chunks",
    "encode_to_ecdc",
    "layout_for",
    "plan_decode",
    "read_plan",
    "write_ecdc_body",
]
