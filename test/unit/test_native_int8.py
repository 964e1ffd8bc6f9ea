"""The engine's own int8 matmul (server/engine/native/kernels.cpp, int8_linear and the Decoder's linears):
fbgemm's numbers bit for bit, on any batch, shape and tile split. test_isa.py runs the same check
held to AVX2 (the vpmaddubsw path)."""

from __future__ import annotations

import pytest
import torch

from server.engine import native, qdynamic
from server.engine.fastlm import quantize_int8


@pytest.fixture(scope="module")
def kernels():
    module = native.kernels()
    if module is None:
        pytest.skip(f"the engine's kernels are not built: {native.status()}")
    return module


def _levels(kernels, levels: int) -> int:
    if not kernels.int8_kernel(levels):
        pytest.skip(f"no int8 kernel of the engine's own for {levels} activation levels on this build")
    return levels


def _weights(out_features: int, in_features: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    codes, channel_scale = quantize_int8(torch.randn(out_features, in_features, generator=gen) * 0.05)
    sums = torch.from_numpy(codes.numpy().sum(axis=1, dtype="int32")).float()
    return codes, channel_scale, sums


@pytest.mark.parametrize("levels", [255, 127])
@pytest.mark.parametrize(
    ("out_features", "in_features", "request_rows"),
    [
        (96, 256, [1]),  # one row: a block per tile
        (96, 256, [2, 1, 2]),  # 5 rows: two blocks per tile
        (100, 250, [3, 4]),  # channels past the last full block, inputs past the last group of 4
        (112, 64, [2] * 10 + [7]),  # 27 rows: full tiles and a remainder; an odd number of blocks
        (128, 96, [3, 3]),  # 6 rows over 8 blocks: four blocks per tile with VNNI, two without
        (128, 96, [2] * 10 + [7]),
    ],
)
def test_gives_fbgemms_bits(kernels, levels, out_features, in_features, request_rows, monkeypatch):
    """Against qdynamic.linear on fbgemm (each request quantized with its own range, as a request alone)."""
    levels = _levels(kernels, levels)
    monkeypatch.setattr(qdynamic, "activation_levels", lambda: levels)
    codes, channel_scale, sums = _weights(out_features, in_features, seed=len(request_rows))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(sum(request_rows), in_features, generator=gen)
    x[0] = x[0].abs()  # a request's range pinned at 0
    x[-1, 3] = 40.0  # and one with an outlier
    ends = torch.tensor(request_rows).cumsum(0).tolist()
    spans = list(zip([0, *ends[:-1]], ends, strict=True))
    want = qdynamic.linear(x, spans, qdynamic.prepack(codes), sums, channel_scale, kernels=None)
    own = kernels.Int8Weights(codes)
    got = kernels.int8_linear(own, x, ends, levels, channel_scale)
    assert torch.equal(got, want)
    bias = torch.randn(out_features, generator=gen)
    assert torch.equal(kernels.int8_linear(own, x, ends, levels, channel_scale, bias), want + bias)
    for a, b in spans:  # a request's numbers are its own, alone or batched
        assert torch.equal(kernels.int8_linear(own, x[a:b].clone(), [b - a], levels, channel_scale), got[a:b])


def test_sums_exactly_at_the_extremes(kernels):
    """Codes of 255 against weights of -127 and 127 everywhere: the int32 sums must not saturate."""
    levels = _levels(kernels, 255)
    codes = torch.full((32, 512), 127, dtype=torch.int8)
    codes[16:] = -127
    x = torch.ones(2, 512)  # range [0, 1]: every code is 255 at zero point 0
    out = kernels.int8_linear(kernels.Int8Weights(codes), x, [2], levels, torch.ones(32))
    step = 1.0 / levels
    want = torch.tensor([512 * 255 * 127 * step] * 16 + [-512 * 255 * 127 * step] * 16)
    torch.testing.assert_close(out, want.expand(2, -1), rtol=1e-6, atol=0)


def test_the_layout_round_trips(kernels):
    codes, _, sums = _weights(37, 70, seed=5)
    own = kernels.Int8Weights(codes)
    assert torch.equal(own.codes(), codes)
    assert torch.equal(own.code_sums.float(), sums)
    assert own.shape == (37, 70)
    assert qdynamic.is_own(own, kernels) and not qdynamic.is_own(qdynamic.prepack(codes), kernels)
    assert torch.equal(qdynamic.codes_of(qdynamic.prepack(codes)), codes)


def test_bad_input_is_refused_with_a_message(kernels):
    levels = _levels(kernels, 255)
    own = kernels.Int8Weights(torch.zeros(16, 8, dtype=torch.int8))
    with pytest.raises(RuntimeError, match=r"x must be float32 \[rows, 8\]"):
        kernels.int8_linear(own, torch.zeros(2, 9), [2], levels, torch.ones(16))
    with pytest.raises(RuntimeError, match="the spans must end at the last row"):
        kernels.int8_linear(own, torch.zeros(2, 8), [1], levels, torch.ones(16))
    with pytest.raises(RuntimeError, match="one float32 channel scale per output"):
        kernels.int8_linear(own, torch.zeros(2, 8), [2], levels, torch.ones(15))
    with pytest.raises(RuntimeError, match="codes must be int8"):
        kernels.Int8Weights(torch.zeros(16, 8))
