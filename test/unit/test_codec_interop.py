"""Interop with the reference `encodec` package (0.1.1): the .ecdc format, then whole models.

The package's source is its PyPI sdist, fetched once with pip into .cache/reference/ (ignored by
git); nothing of it is committed. Its `binary` module is plain Python and is loaded by path. The
rest imports torchaudio at import time, which does not load with this project's torch, so for the
model-level tests a stand-in `torchaudio` module is put in place while it imports (the codec path
never calls torchaudio). Both sides then share random weights: the reference's real-shape 24 kHz
and 48 kHz models, with random codebooks, copied into transformers' EncodecModel.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.catalogue import get_spec
from server.engine.codec import codec as C
from server.engine.codec import container
from server.engine.codec.container import BitWriter, Header
from server.tiny.encodec import real_config

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "encodec==0.1.1"
CACHE = ROOT / ".cache" / "reference" / "encodec-0.1.1"


@pytest.fixture(scope="session")
def reference_src() -> Path:
    if not (CACHE / "encodec" / "binary.py").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "-q", REFERENCE, "--no-deps", "--no-binary", ":all:"]
            done = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True, timeout=300)
            sdists = list(Path(tmp).glob("encodec-*.tar.gz"))
            if done.returncode != 0 or not sdists:
                pytest.skip(f"cannot fetch the reference {REFERENCE} sdist with pip: {done.stderr.strip()[-300:]}")
            with tarfile.open(sdists[0]) as tar:
                tar.extractall(tmp, filter="data")
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(CACHE, ignore_errors=True)
            shutil.move(str(Path(tmp) / "encodec-0.1.1"), CACHE)
    return CACHE


@pytest.fixture(scope="session")
def ref_binary(reference_src):
    spec = importlib.util.spec_from_file_location("reference_encodec_binary", reference_src / "encodec" / "binary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ref(reference_src):
    """The reference package (model, compress), imported with a stand-in torchaudio."""
    pytest.importorskip("einops", reason="the reference quantizer needs einops (test extra)")
    import transformers  # noqa: F401 - first, so that it never sees the stand-in

    saved = {k: v for k, v in sys.modules.items() if k == "encodec" or k.startswith("encodec.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    sys.path.insert(0, str(reference_src))
    try:
        import encodec
        import encodec.compress
        import encodec.model
    finally:
        sys.path.remove(str(reference_src))
        del sys.modules["torchaudio"]
    return types.SimpleNamespace(
        package=encodec, compress=sys.modules["encodec.compress"], model=sys.modules["encodec.model"]
    )


# -- the format, with the reference's own reader and writer ------------------------------------


@pytest.mark.parametrize("bits", [1, 5, 10, 11, 16])
def test_our_bit_packing_is_the_reference_bitpacker(ref_binary, bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=777).tolist()
    buf = io.BytesIO()
    packer = ref_binary.BitPacker(bits, buf)
    for v in values:
        packer.push(v)
    packer.flush()
    w = BitWriter(bits)
    ours = w.write(np.array(values[:300])) + w.write(np.array(values[300:])) + w.flush()
    assert ours == buf.getvalue()
    unpacker = ref_binary.BitUnpacker(bits, io.BytesIO(ours))
    assert [unpacker.pull() for _ in values] == values


def test_headers_both_ways(ref_binary):
    meta = {"m": "encodec_48khz", "al": 123456, "nc": 16, "lm": False}
    buf = io.BytesIO()
    ref_binary.write_ecdc_header(buf, meta)
    ours = container.encode_header(Header("encodec_48khz", 123456, 16))
    assert ours == buf.getvalue()
    assert ref_binary.read_ecdc_header(io.BytesIO(ours)) == meta
    assert container.read_header(io.BytesIO(buf.getvalue()))[0] == Header("encodec_48khz", 123456, 16)


def reference_read(ref_binary, data: bytes, layout: container.Layout) -> list[tuple[float | None, np.ndarray]]:
    """Parse an .ecdc with the reference binary module, as its decompress_from_file walks it."""
    import math

    f = io.BytesIO(data)
    meta = ref_binary.read_ecdc_header(f)
    al, nc = meta["al"], meta["nc"]
    seg_len = layout.segment_length or al
    stride = layout.segment_stride or al
    out = []
    for offset in range(0, al, stride):
        this = min(al - offset, seg_len)
        frames = int(math.ceil(this / layout.sample_rate * layout.frame_rate))
        scale = struct.unpack("!f", ref_binary._read_exactly(f, 4))[0] if layout.normalize else None
        unpacker = ref_binary.BitUnpacker(layout.bits, f)
        codes = [[unpacker.pull() for _ in range(nc)] for _ in range(frames)]
        assert all(c is not None for row in codes for c in row), "the reference reader ran out of codes"
        out.append((scale, np.array(codes).T))
    assert f.read() == b"", "bytes left over after the last segment"
    return out


@pytest.fixture(scope="module")
def tiny_codecs(tiny_hub):
    from lib.settings import Settings
    from server.models.registry import ModelRegistry

    reg = ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))
    return {n: C.Codec.of(reg.get(n)) for n in ("encodec-24khz", "encodec-48khz", "encodec-32khz")}


def tone(channels: int, n: int, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal((channels, n))).astype(np.float32)


@pytest.mark.parametrize("name,n", [("encodec-24khz", 50000), ("encodec-24khz", 6720), ("encodec-48khz", 100000)])
def test_reference_reader_reads_our_files(ref_binary, tiny_codecs, name, n):
    c = tiny_codecs[name]
    audio = tone(c.layout.channels, n, c.layout.sample_rate)
    chunks = list(C.encode_chunks(c, [audio], c.bandwidths[1]))
    sink = io.BytesIO()
    C.write_ecdc_body(c, chunks, sink)
    header = Header(c.layout.name, n, chunks[0].codes.shape[0])
    segments = reference_read(ref_binary, container.encode_header(header) + sink.getvalue(), c.layout)
    by_segment: dict[int, list[np.ndarray]] = {}
    for ch in chunks:
        by_segment.setdefault(ch.segment, []).append(ch.codes)
    assert len(segments) == len(by_segment)
    for (scale, codes), (i, parts) in zip(segments, sorted(by_segment.items()), strict=True):
        ours = np.concatenate(parts, axis=1)
        # The reader may want one frame more than the encoder made (6720 samples): our writer repeats the last.
        assert np.array_equal(codes[:, : ours.shape[1]], ours)
        assert codes.shape[1] - ours.shape[1] in (0, 1)
        first = next(ch for ch in chunks if ch.segment == i)
        assert scale == (None if first.scale is None else pytest.approx(first.scale, rel=1e-7))


@pytest.mark.parametrize("name", ["encodec-24khz", "encodec-48khz"])
def test_we_read_files_the_reference_writer_makes(ref_binary, tiny_codecs, name):
    """Random codes written with the reference's header writer and BitPacker decode here as ours do."""
    c = tiny_codecs[name]
    layout = c.layout
    n, nc = int(layout.sample_rate * 2.3), 4
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    ref_binary.write_ecdc_header(buf, {"m": layout.name, "al": n, "nc": nc, "lm": False})
    chunks = []
    for i, (_, length) in enumerate(layout.segments(n)):
        frames = layout.encoder_frames(length)
        codes = rng.integers(0, 1 << layout.bits, size=(nc, frames))
        scale = float(np.float32(rng.uniform(0.05, 0.5))) if layout.normalize else None
        if scale is not None:
            buf.write(struct.pack("!f", scale))
        packer = ref_binary.BitPacker(layout.bits, buf)
        for t in range(frames):
            for k in range(nc):
                packer.push(int(codes[k, t]))
        packer.flush()
        chunks.append(C.CodeChunk(i, codes, scale, first=True, last=True, length=length))
    theirs = buf.getvalue()
    ours_body = io.BytesIO()
    C.write_ecdc_body(c, chunks, ours_body)
    ours = container.encode_header(Header(layout.name, n, nc)) + ours_body.getvalue()
    assert ours == theirs  # 2.3 s is no length where the reference reader wants an extra frame

    def decode(data: bytes) -> np.ndarray:
        f = io.BytesIO(data)
        plan, _ = C.read_plan(lambda _n: c, f, len(data))
        return np.concatenate(list(C.decode_blocks(plan, f)), axis=1)

    out = decode(theirs)
    assert out.shape == (layout.channels, n) and np.isfinite(out).all()


# -- whole models with shared random weights ------------------------------------------------------


def _reference_model(ref, name: str, seed: int):
    Ref = ref.model.EncodecModel
    torch.manual_seed(seed)
    if name == "encodec-24khz":
        model = Ref._get_model([1.5, 3.0, 6, 12.0, 24.0], 24000, 1, causal=True, model_norm="weight_norm")
        model.name = "encodec_24khz"
    else:
        model = Ref._get_model(
            [3.0, 6.0, 12.0, 24.0],
            48000,
            2,
            causal=False,
            model_norm="time_group_norm",
            audio_normalize=True,
            segment=1.0,
        )
        model.name = "encodec_48khz"
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            book = layer._codebook
            book.embed.copy_(torch.randn_like(book.embed) * 0.5)
            book.embed_avg.copy_(book.embed)
            book.inited.fill_(1.0)
    return model.eval()


def _hf_name(key: str) -> str:
    """A reference state-dict key as transformers' EncodecModel names it."""
    key = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", key)
    key = re.sub(r"\.conv(?:tr)?\.conv(?:tr)?\.weight_g$", ".conv.parametrizations.weight.original0", key)
    key = re.sub(r"\.conv(?:tr)?\.conv(?:tr)?\.weight_v$", ".conv.parametrizations.weight.original1", key)
    key = re.sub(r"\.conv(?:tr)?\.conv(?:tr)?\.(weight|bias)$", r".conv.\1", key)
    return re.sub(r"\.conv(?:tr)?\.norm\.(weight|bias)$", r".norm.\1", key)


def _as_transformers(ref_model, name: str) -> C.Codec:
    """The same weights in transformers' EncodecModel, every tensor mapped by name (strict)."""
    from transformers import EncodecModel

    hf = EncodecModel(real_config(name)).eval()
    mapped = {_hf_name(k): v for k, v in ref_model.state_dict().items()}
    ours = hf.state_dict()
    assert set(mapped) == set(ours), sorted(set(mapped) ^ set(ours))[:6]
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    hf.load_state_dict(mapped, strict=True)
    spec = get_spec(name)
    return C.Codec(spec=spec, model=hf, layout=C.layout_for(spec, hf.config), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def shared_models(ref):
    models = {}
    for name in ("encodec-24khz", "encodec-48khz"):
        ref_model = _reference_model(ref, name, seed=7)
        models[name] = (ref_model, _as_transformers(ref_model, name))
    return models


def _ours(codec: C.Codec, audio: np.ndarray, bw: float) -> bytes:
    sink = io.BytesIO()
    header, _ = C.encode_to_ecdc(codec, [audio], bw, sink)
    return container.encode_header(header) + sink.getvalue()


def _our_decode(codec: C.Codec, data: bytes) -> np.ndarray:
    f = io.BytesIO(data)
    plan, _ = C.read_plan(lambda _n: codec, f, len(data))
    return np.concatenate(list(C.decode_blocks(plan, f)), axis=1)


def _their_decode(ref, ref_model, data: bytes, monkeypatch) -> np.ndarray:
    monkeypatch.setitem(ref.compress.MODELS, ref_model.name, lambda: ref_model)
    wav, _ = ref.compress.decompress(data)
    return wav.numpy()


@pytest.mark.parametrize(
    "name,seconds,bw", [("encodec-24khz", 1.7, 6.0), ("encodec-24khz", 2.2, 1.5), ("encodec-48khz", 2.3, 12.0)]
)
def test_same_weights_give_the_reference_bytes_and_audio(ref, shared_models, name, seconds, bw, monkeypatch):
    ref_model, codec = shared_models[name]
    audio = tone(codec.layout.channels, int(seconds * codec.layout.sample_rate), codec.layout.sample_rate, seed=3)
    ref_model.set_target_bandwidth(bw)
    theirs = ref.compress.compress(ref_model, torch.from_numpy(audio), use_lm=False)
    ours = _ours(codec, audio, bw)
    assert ours == theirs
    # Each side decodes the other's file to the same audio (float rounding aside).
    ours_decoded = _our_decode(codec, theirs)
    theirs_decoded = _their_decode(ref, ref_model, ours, monkeypatch)
    assert ours_decoded.shape == theirs_decoded.shape == audio.shape
    assert np.allclose(ours_decoded, theirs_decoded, atol=1e-4)


def test_streamed_24khz_encoding_is_the_references_one_piece(ref, shared_models, monkeypatch):
    """Long inputs run chunk by chunk here and in one piece in the reference: same bytes."""
    ref_model, codec = shared_models["encodec-24khz"]
    audio = tone(1, int(3.1 * 24000), 24000, seed=4)
    ref_model.set_target_bandwidth(24.0)
    theirs = ref.compress.compress(ref_model, torch.from_numpy(audio), use_lm=False)
    monkeypatch.setattr(C, "CHUNK_S", 0.4)
    assert codec.chunk_samples < audio.shape[1] // 5
    assert _ours(codec, audio, 24.0) == theirs
    decoded = _our_decode(codec, theirs)  # streamed decoder too
    assert np.allclose(decoded, _their_decode(ref, ref_model, theirs, monkeypatch), atol=1e-4)
