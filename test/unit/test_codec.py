"""The EnCodec engine on tiny checkpoints: container, streaming, determinism, exact lengths."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from lib.settings import Settings
from server.engine.codec import codec as C
from server.engine.codec import container, stream
from server.engine.codec.container import BitWriter, Header, Layout, unpack_codes
from server.engine.codec.errors import EcdcError
from server.models.registry import ModelRegistry
from server.tiny.encodec import build_model, tiny_config

CODECS = ("encodec-24khz", "encodec-48khz", "encodec-32khz")


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def codecs(registry):
    return {name: C.Codec.of(registry.get(name)) for name in CODECS}


def noise(channels: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 24000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    return (tone + 0.05 * rng.standard_normal((channels, n))).astype(np.float32)


def encode(codec: C.Codec, audio: np.ndarray, bw: float | None = None, block: int = 40000) -> bytes:
    sink = io.BytesIO()
    blocks = (audio[:, i : i + block] for i in range(0, audio.shape[1], block))
    header, _ = C.encode_to_ecdc(codec, blocks, bw or codec.bandwidths[0], sink)
    return container.encode_header(header) + sink.getvalue()


def decode(codec: C.Codec, data: bytes) -> np.ndarray:
    f = io.BytesIO(data)
    plan, _ = C.read_plan(lambda _name: codec, f, len(data))
    return np.concatenate(list(C.decode_blocks(plan, f)), axis=1)


# -- container -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 3, 7, 8, 10, 11, 13, 16])
def test_bit_packing_round_trips(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=1001)
    w = BitWriter(bits)
    data = w.write(values[:500]) + w.write(values[500:]) + w.flush()
    assert len(data) == -(-1001 * bits // 8)
    assert np.array_equal(unpack_codes(data, bits, 1001), values)


def test_bit_packing_is_lsb_first():
    # 10-bit values 1 and 2: bits 1000000000 0100000000 -> bytes 0x01, 0x08, then 0x00 padding.
    w = BitWriter(10)
    assert w.write(np.array([1, 2])) + w.flush() == bytes([0x01, 0x08, 0x00])


def test_bit_writer_refuses_codes_out_of_range():
    with pytest.raises(ValueError):
        BitWriter(10).write(np.array([1024]))


def test_header_bytes_are_the_reference_layout():
    data = container.encode_header(Header("encodec_24khz", 48000, 8))
    meta = b'{"m": "encodec_24khz", "al": 48000, "nc": 8, "lm": false}'
    assert data == b"ECDC" + bytes([0]) + len(meta).to_bytes(4, "big") + meta
    header, used = container.read_header(io.BytesIO(data + b"rest"))
    assert header == Header("encodec_24khz", 48000, 8) and used == len(data)


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", "empty_upload"),
        (b"EC", "truncated_ecdc"),
        (b"RIFF\x00\x00\x00\x00WAVE", "not_ecdc"),
        (b"ECDC\x01\x00\x00\x00\x02{}", "unsupported_ecdc"),
        (b"ECDC\x00\xff\xff\xff\xff", "corrupt_ecdc"),
        (b"ECDC\x00\x00\x00\x00\x10{}", "truncated_ecdc"),
        (b"ECDC\x00\x00\x00\x00\x03abc", "corrupt_ecdc"),
        (b"ECDC\x00\x00\x00\x00\x02[]", "corrupt_ecdc"),
        (b'ECDC\x00\x00\x00\x00\x0a{"m": "x"}', "corrupt_ecdc"),
    ],
)
def test_bad_headers_are_ecdc_errors(data, code):
    with pytest.raises(EcdcError) as err:
        container.read_header(io.BytesIO(data))
    assert err.value.code == code and err.value.message


@pytest.mark.parametrize(
    "meta", [{"m": 1, "al": 1, "nc": 1}, {"m": "a", "al": -1, "nc": 1}, {"m": "a", "al": True, "nc": 1}]
)
def test_bad_header_fields(meta):
    import json

    raw = json.dumps(meta).encode()
    with pytest.raises(EcdcError):
        container.read_header(io.BytesIO(b"ECDC\x00" + len(raw).to_bytes(4, "big") + raw))


def test_unknown_model_name():
    assert container.catalogue_name("encodec_24khz") == "encodec-24khz"
    assert container.catalogue_name("encodec_32khz") == "encodec-32khz"
    with pytest.raises(EcdcError) as err:
        container.catalogue_name("encodec_96khz")
    assert err.value.code == "unknown_codec_model" and "encodec_24khz" in err.value.hint


def test_layout_counts_frames_as_the_reference_reader():
    layout = Layout("encodec_24khz", 24000, 1, 320, 10, 32, False)
    assert layout.frame_rate == 75
    assert layout.encoder_frames(6720) == 21
    assert layout.reader_frames(6720) == 22  # float rounding in ceil(6720 / 24000 * 75)
    assert layout.frames_written(6720) == 22
    seg = Layout("encodec_48khz", 48000, 2, 320, 10, 16, True, 48000, 47520)
    assert list(seg.segments(48000)) == [(0, 48000), (47520, 480)]
    assert list(seg.segments(100000)) == [(0, 48000), (47520, 48000), (95040, 4960)]


class _CountingLayout(Layout):
    """A layout that counts the per-segment arithmetic it does."""

    calls = 0

    def segment_bytes(self, frames: int, codebooks: int) -> int:
        type(self).calls += 1
        return super().segment_bytes(frames, codebooks)


@pytest.mark.parametrize(
    "layout",
    [
        _CountingLayout("encodec_48khz", 48000, 2, 320, 10, 16, True, 48000, 47520),
        _CountingLayout("encodec_24khz", 24000, 1, 320, 10, 32, False),
        _CountingLayout("odd", 16000, 1, 40, 10, 8, True, 1000, 10),  # 100 segments overlap each sample
    ],
)
@pytest.mark.parametrize("audio_length", [1, 47999, 48000, 95041, 10**6 + 7, 475_200_000_000, 5_700_000_000_000])
def test_header_claims_are_checked_against_the_body_in_constant_work(layout, audio_length):
    """Whatever a header claims (10 million segments, 5.7e12 samples), a body that cannot hold it
    is refused after a bounded number of steps, and the plan of one that can matches segments()."""
    expected = [(o, n) for o, n in layout.segments(audio_length)] if audio_length < 10**7 else None
    if expected is not None:
        runs = layout.segment_runs(audio_length)
        bound = 2 + layout.segment_length // layout.segment_stride if layout.segment_length else 1
        assert len(runs) <= bound
        assert sum(n for n, _, _ in runs) == len(expected)
        want = [layout.encoder_frames(n) for _, n in expected[:-1]] + [layout.frames_written(expected[-1][1])]
        body = sum(layout.segment_bytes(f, 4) for f in want)
        assert layout.segment_frames(audio_length, 4, body) == want
    _CountingLayout.calls = 0
    with pytest.raises(EcdcError) as err:
        layout.segment_frames(audio_length, 4, 77)
    assert err.value.code in ("truncated_ecdc", "corrupt_ecdc")
    assert _CountingLayout.calls <= 2 * (3 + (layout.segment_length or 0) // (layout.segment_stride or 1))


def test_header_lengths_past_any_body_are_corrupt():
    big = container.encode_header(Header("encodec_24khz", container.MAX_AUDIO_LENGTH + 1, 2))
    with pytest.raises(EcdcError, match="invalid audio length"):
        container.read_header(io.BytesIO(big))


# -- streaming equals one piece ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["encodec-24khz", "encodec-32khz"])
@pytest.mark.parametrize("chunk", [641, 4000, 33333])
def test_streaming_encoder_and_decoder_match_one_piece(name, chunk):
    config = tiny_config(name)
    model = build_model(config, seed=3)
    x = torch.from_numpy(noise(1, config.sampling_rate * 2 + 123, seed=1))[None]
    with torch.inference_mode():
        whole = model.encoder(x)
        enc = stream.streaming(model.encoder)
        parts = [enc.push(x[..., i : i + chunk]) for i in range(0, x.shape[-1], chunk)] + [enc.flush()]
        streamed = torch.cat([p for p in parts if p is not None], dim=-1)
        assert streamed.shape == whole.shape
        assert torch.allclose(streamed, whole, atol=1e-5)
        codes = model.quantizer.encode(whole, config.target_bandwidths[-1])
        assert torch.equal(model.quantizer.encode(streamed, config.target_bandwidths[-1]), codes)

        emb = model.quantizer.decode(codes)
        whole_audio = model.decoder(emb)
        dec = stream.streaming(model.decoder)
        step = max(1, chunk // config.hop_length)
        parts = [dec.push(emb[..., i : i + step]) for i in range(0, emb.shape[-1], step)] + [dec.flush()]
        streamed_audio = torch.cat([p for p in parts if p is not None], dim=-1)
        assert streamed_audio.shape == whole_audio.shape
        assert torch.allclose(streamed_audio, whole_audio, atol=1e-5)


def test_time_group_norm_does_not_stream():
    model = build_model(tiny_config("encodec-48khz"), seed=0)
    assert not stream.can_stream(model.encoder)
    assert stream.can_stream(build_model(tiny_config("encodec-24khz"), seed=0).encoder)


# -- the codec on the tiny checkpoints -----------------------------------------------------------


@pytest.mark.parametrize("name", CODECS)
def test_real_framing(codecs, name):
    c = codecs[name]
    spec = c.spec
    assert (c.layout.sample_rate, c.layout.channels) == (spec.sample_rate, spec.channels)
    assert c.layout.frame_rate == spec.frame_rate_hz
    assert c.layout.max_codebooks == spec.codebooks
    assert 1 << c.layout.bits == spec.codebook_size
    assert c.bandwidths == spec.bandwidths_kbps
    assert c.layout.normalize == (name == "encodec-48khz")
    assert c.layout.segment_length == (48000 if name == "encodec-48khz" else None)


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_gives_exact_lengths_and_deterministic_bytes(codecs, name):
    c = codecs[name]
    rate = c.layout.sample_rate
    for n in (1, 319, 6720, rate, rate + 480, 2 * rate + 17, int(rate * 5.7)):
        audio = noise(c.layout.channels, n, seed=n)
        data = encode(c, audio)
        assert data == encode(c, audio, block=7777), f"{name}: bytes depend on block size at n={n}"
        out = decode(c, data)
        assert out.shape == (c.layout.channels, n)
        assert np.isfinite(out).all()
        header, used = container.read_header(io.BytesIO(data))
        assert header.audio_length == n
        assert len(data) - used == c.layout.body_bytes(n, header.num_codebooks)


def test_long_input_streams_and_equals_one_piece(codecs, monkeypatch):
    c = codecs["encodec-24khz"]
    audio = noise(1, int(24000 * 2.5), seed=9)
    monkeypatch.setattr(C, "CHUNK_S", 0.5)  # five streaming chunks
    streamed = encode(c, audio, bw=24.0)
    monkeypatch.setattr(C, "CHUNK_S", 100.0)  # one piece
    whole = encode(c, audio, bw=24.0)
    assert streamed == whole
    a = decode(c, whole)
    monkeypatch.setattr(C, "CHUNK_S", 0.5)
    b = decode(c, whole)
    assert np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "name,bw,nc", [("encodec-24khz", 1.5, 2), ("encodec-24khz", 24.0, 32), ("encodec-48khz", 3.0, 2)]
)
def test_bandwidth_sets_codebooks(codecs, name, bw, nc):
    data = encode(codecs[name], noise(codecs[name].layout.channels, 5000), bw=bw)
    assert container.read_header(io.BytesIO(data))[0].num_codebooks == nc


def test_unoffered_bandwidth_lists_valid_values(codecs):
    from server.engine.errors import UnsupportedRequest

    with pytest.raises(UnsupportedRequest) as err:
        codecs["encodec-24khz"].codebooks_for(5.0)
    assert "1.5, 3, 6, 12, 24" in err.value.message


def test_writer_pads_a_frame_where_the_reference_reader_expects_one(codecs):
    c = codecs["encodec-24khz"]
    data = encode(c, noise(1, 6720), bw=1.5)
    header, used = container.read_header(io.BytesIO(data))
    # 22 frames (not the encoder's 21) x 2 codebooks x 10 bits.
    assert len(data) - used == -(-22 * 2 * 10 // 8)
    frames = unpack_codes(data[used:], 10, 44).reshape(22, 2)
    assert np.array_equal(frames[21], frames[20])
    assert decode(c, data).shape == (1, 6720)


def test_decoder_reads_files_with_the_encoders_frame_count(codecs):
    """The reference writer's files at such lengths hold 21 frames: we read those too."""
    c = codecs["encodec-24khz"]
    data = encode(c, noise(1, 6720), bw=1.5)
    header, used = container.read_header(io.BytesIO(data))
    codes = unpack_codes(data[used:], 10, 42)
    w = BitWriter(10)
    short = data[:used] + w.write(codes) + w.flush()
    assert len(short) < len(data)
    assert np.allclose(decode(c, short), decode(c, data), atol=1e-6)


@pytest.mark.parametrize("cut", [1, 5, 100])
def test_truncated_and_padded_bodies_are_refused(codecs, cut):
    c = codecs["encodec-48khz"]
    data = encode(c, noise(2, 60000))
    with pytest.raises(EcdcError) as err:
        decode(c, data[:-cut])
    assert err.value.code == "truncated_ecdc"
    with pytest.raises(EcdcError) as err:
        decode(c, data + b"\x00" * cut)
    assert err.value.code == "corrupt_ecdc"


def test_corrupt_scale_is_refused(codecs):
    c = codecs["encodec-48khz"]
    data = bytearray(encode(c, noise(2, 6000)))
    _, used = container.read_header(io.BytesIO(bytes(data)))
    data[used : used + 4] = b"\x7f\xc0\x00\x00"  # NaN
    with pytest.raises(EcdcError):
        decode(c, bytes(data))


def test_too_many_codebooks_and_lm_are_refused(codecs):
    c = codecs["encodec-32khz"]
    for header in (Header("encodec_32khz", 640, 5), Header("encodec_32khz", 640, 4, use_lm=True)):
        data = container.encode_header(header) + b"\x00" * 100
        with pytest.raises(EcdcError):
            decode(c, data)


@pytest.mark.parametrize("name", ["encodec-24khz", "encodec-32khz"])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_lengths_of_whole_chunks(codecs, monkeypatch, name, chunks):
    """A length that is a whole number of streaming chunks (nothing left for the flush)."""
    monkeypatch.setattr(C, "CHUNK_S", 0.5)
    c = codecs[name]
    n = chunks * c.chunk_samples
    audio = noise(1, n, seed=chunks)
    data = encode(c, audio, block=c.chunk_samples)
    assert data == encode(c, audio, block=1000)
    assert decode(c, data).shape == (1, n)
    monkeypatch.setattr(C, "CHUNK_S", 100.0)
    assert encode(c, audio) == data


@pytest.mark.parametrize("name", CODECS)
def test_real_shapes(name):
    """The benchmark's real-shape configs: the catalogue's framing and about its size on disk.

    encodec_24khz's model.safetensors is 93.1 MB; the others follow from the same widths (48 kHz:
    16 codebooks instead of 32) and from musicgen's 32 kHz codec (64 filters, codebook dim 128).
    """
    from lib.catalogue import get_spec
    from server.tiny.encodec import real_config

    spec = get_spec(name)
    config = real_config(name)
    assert (config.sampling_rate, config.audio_channels) == (spec.sample_rate, spec.channels)
    assert (config.frame_rate, config.num_quantizers, config.codebook_size) == (
        spec.frame_rate_hz,
        spec.codebooks,
        spec.codebook_size,
    )
    assert tuple(config.target_bandwidths) == spec.bandwidths_kbps
    model = build_model(config, seed=0)
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert size == pytest.approx(spec.approx_size_gb * 1e9, rel=0.05)
    if name == "encodec-24khz":
        assert size == pytest.approx(93.1e6, rel=0.002)
