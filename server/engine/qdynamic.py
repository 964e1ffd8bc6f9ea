"""int8-dynamic: int8 weight codes times activations quantized per request, in fbgemm's int8 kernel.

**The activation range depends on the kernel.** fbgemm multiplies uint8 activations by int8 weights.
With VNNI (AVX512-VNNI, AVX-VNNI) it sums the products straight into int32. Without it (AVX2 only:
AMD Zen 3 and older, Intel before Ice Lake) it adds pairs of products into int16 first
(`vpmaddubsw`), which saturates at 32767: two products of 255 x 127 are 64770. Measured on an AMD
EPYC with fbgemm held to AVX2 (FBGEMM_ENABLE_INSTRUCTIONS=AVX2): 64 codes of 255 times weights of
127 summed to 1,048,544 instead of 2,072,640, and the decoder's logits drifted by 1.6 x their std
from float32 (0.03 with VNNI). So `activation_levels()` asks the kernel itself, once: where full-range
codes saturate, activations use 7 bits (0..127, as torch's own dynamic linear does with
reduce_range), where two products stay below 2^15.

**The engine's own int8 matmul** (server/engine/native/kernels.cpp, `int8_linear`) takes fbgemm's place
where the engine's kernels are built for an AVX2 or AVX-512 CPU: the same codes (each request's, as
below) and exact integer sums, so the same bits as fbgemm's path over several requests, at the
rate a step's few rows can stream the weights. PackedLinear holds its weights in one layout or the
other (`is_own`, `codes_of`).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

Spans = list[tuple[int, int]]

# fbgemm's int8 linear that takes the input's scale and zero point from the caller and returns fp32.
_FIXED_QLINEAR = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32


def prepack(codes: torch.Tensor):
    """int8 weight codes [out, in] prepacked for fbgemm at unit scale (channel scales go after)."""
    out_features = codes.shape[0]
    with warnings.catch_warnings():  # quantized tensors are deprecated, the packed kernel is what is used
        warnings.simplefilter("ignore", UserWarning)
        unit = torch._make_per_channel_quantized_tensor(
            codes,
            torch.ones(out_features, dtype=torch.double),
            torch.zeros(out_features, dtype=torch.long),
            0,
        )
    return torch.ops.quantized.linear_prepack(unit, None)


def own_kernel(kernels) -> str:  # noqa: ANN001 - server/engine/native's module, or None
    """The engine's own int8 matmul this process runs ('avx512-vnni', 'avx2'), or '' for fbgemm's."""
    return kernels.int8_kernel(activation_levels()) if kernels is not None else ""


def is_own(packed, kernels) -> bool:  # noqa: ANN001
    """Whether `packed` is in the engine's own layout (kernels.Int8Weights) rather than fbgemm's."""
    return kernels is not None and isinstance(packed, kernels.Int8Weights)


def codes_of(packed, kernels=None) -> torch.Tensor:  # noqa: ANN001
    """The int8 codes [out, in] behind either layout."""
    if is_own(packed, kernels):
        return packed.codes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.ops.quantized.linear_unpack(packed)[0].int_repr()


@functools.cache
def activation_levels() -> int:
    """The largest activation code: 255 where the kernel sums exactly, 127 where it would saturate."""
    in_features = 64
    packed = prepack(torch.full((8, in_features), 127, dtype=torch.int8))
    out = _FIXED_QLINEAR(torch.full((2, in_features), 255.0), 1.0, 0, packed)
    return 255 if out[0, 0].item() == in_features * 255 * 127 else 127


def linear(
    x: torch.Tensor,
    spans: Spans | None,
    packed,
    code_sums: torch.Tensor,
    channel_scale: torch.Tensor,
    kernels=None,  # noqa: ANN001 - server/engine/native's module, or None for torch's ops
) -> torch.Tensor:
    """x @ W.T for int8 weight codes W (channel_scale per output row), with x quantized per request:
    its own scale and zero point from its own rows' min and max (with 0 in the range), as dynamic
    quantization picks them for a request alone. The weights are read once per call, whatever the
    number of requests.

    One request: the kernel quantizes x itself, to round(x / s + z), and returns float(sum) * s.
    Several: the kernel takes one (scale, zero point) per call, so each request's codes are computed
    here with the kernel's own formula and passed as exact integers at scale 1 and zero point Z; the
    extra (z_r - Z) * sum(codes) is taken off and the sum scaled by s_r. The integer sums are exact in
    fp32 (they stay far below 2^24 for these weights), so a request gets the same bits alone or batched.
    `kernels` does that arithmetic in two calls (native/kernels.cpp), with the same bits.
    """
    levels = activation_levels()
    if is_own(packed, kernels):  # the engine's own int8 matmul (native/kernels.cpp): one call, per-request codes
        ends = [x.shape[0]] if spans is None else [b for _, b in spans]
        return kernels.int8_linear(packed, x.contiguous(), ends, levels, channel_scale)
    if spans is None or len(spans) == 1:
        lo, hi = torch.aminmax(x)
        scale, zero_point = _qparams(lo.item(), hi.item(), levels)
        return _FIXED_QLINEAR(x, scale, zero_point, packed).mul_(channel_scale)
    shared_zero = (levels + 1) // 2  # the fixed zero point of a call that carries several requests
    if kernels is not None:
        codes, scale_t, shift_t = kernels.quantize_spans(x.contiguous(), [b for _, b in spans], levels, shared_zero)
        out = _FIXED_QLINEAR(codes, 1.0, shared_zero, packed)
        return kernels.dequantize_rows(out, shift_t, code_sums, scale_t, channel_scale)
    # amin and amax, not aminmax(dim=1): torch's row-wise aminmax is ~16x slower on [20 x 4096]
    # (195 us against 12 us on one core), and it ran on every matmul of a batched step.
    bounds = torch.stack((x.amin(dim=1), x.amax(dim=1)), dim=1).tolist()  # [rows][lo, hi]
    row_scale, row_shift = [], []
    for a, b in spans:
        rows = bounds[a:b]
        scale, zero_point = _qparams(min(r[0] for r in rows), max(r[1] for r in rows), levels)
        row_scale += [scale] * (b - a)
        row_shift += [zero_point - shared_zero] * (b - a)
    scale_t = torch.tensor(row_scale, dtype=torch.float32, device=x.device)[:, None]
    shift_t = torch.tensor(row_shift, dtype=torch.float32, device=x.device)[:, None]
    # Clamped to uint8 as the kernel clamps its own codes (with 7-bit levels, rounding can reach 128:
    # 2 x 128 x 127 still fits in int16).
    codes = torch.round_(x / scale_t + (shift_t + shared_zero)).clamp_(0, 255).sub_(shared_zero)
    out = _FIXED_QLINEAR(codes, 1.0, shared_zero, packed)
    return torch.addcmul(out, shift_t, code_sums, value=-1).mul_(scale_t).mul_(channel_scale)


def _qparams(lo: float, hi: float, levels: int) -> tuple[float, int]:
    """Scale (as the fp32 the kernel uses) and zero point of a request's range [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / levels)) or 1.0
    return scale, min(levels, max(0, round(-lo / scale)))
