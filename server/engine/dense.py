"""The dense (float32, bfloat16, float16) matmul of a decode step, y = x @ W.T for a few rows, per CPU.

A decode step multiplies 2 rows (one guided request) by every weight: it is bound by reading the
weights, so a kernel is as good as the bandwidth it streams at. Measured on a 2-core AMD EPYC Zen 4
(the fastest of 40 interleaved calls on the decoder's weight shapes, `bench/dense.py`, taken under
load from other processes; the tables are in docs/benchmarks.md §Dense kernels, issue 20):

- **MKL's fp32 `F.linear` on 2 rows runs on one thread**: 1.21 ms for 1024x3072 on one thread and
  1.23 ms on two (10 GB/s). The same holds with MKL held to AVX2. This is why float32 was slow on
  AMD for transformers and the engine alike.
- **Split by output columns, it runs on all of them, with the same bits.** The weight's rows cut into
  `parts` equal blocks ([parts, out/parts, in], a view: no copy) and multiplied by one `torch.bmm`,
  MKL runs the blocks on separate threads: 0.76 ms (17 GB/s). Each output is summed over the same
  inputs in the same order as one `F.linear` does, so the result is bitwise `F.linear`'s, at one
  thread and at two: float32 stays token-identical to transformers. That is checked, not assumed:
  `column_split_is_exact` runs both on each weight shape at pack time, and a shape whose bits
  differ (another MKL, another CPU) keeps `F.linear`.
- **bf16: oneDNN's packed weights** (`torch.ops.mkldnn._linear_pointwise` on a weight reordered
  once at load) run at 27-38 GB/s on Zen 4 (AVX512-BF16), 1.5x bf16 `F.linear` (which runs oneDNN
  too, with the same bits, but without a weight packed ahead). oneDNN has no native bf16 without
  AVX512-BF16 or AMX (the reorder refuses with its ISA held to AVX2); there bf16 takes the column
  split like float32 (emulated bf16, 13-19 GB/s).
- **fp16 is no faster than bf16 on CPU** (13-17 GB/s with the column split on Zen 4 and with AVX2;
  oneDNN's fp16 needs AVX512-FP16 or AVX-NE-CONVERT), so it gains no CPU tier.
- Not taken: the weight stored transposed ([in, out], MKL's NN kernel) reaches 21-23 GB/s on fp32
  but gives other bits than transformers, and oneDNN fp32 (19-20 GB/s) likewise; the column split
  keeps exactness at about 80 % of their speed.

**Batch independence.** Each kernel is called on blocks of a fixed row count (fastlm's `row_block`):
a row's output depends only on its own values for a given kernel and shape.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# The kernels, by name (reported in /health and the benchmark header).
ATEN = "aten"  # F.linear as torch dispatches it (MKL for fp32)
COLUMN_SPLIT = "column-split"  # one bmm over equal blocks of output columns, one block per thread
ONEDNN = "onednn-packed"  # oneDNN with the weight reordered once at load
KERNELS = (ATEN, COLUMN_SPLIT, ONEDNN)

# A kernel every dense weight takes instead of the CPU's choice: how bench/generate.py runs kernel A
# against kernel B in one run (`--precisions float32/aten,float32`). None: the choice below.
forced: str | None = None


def onednn_bf16() -> bool:
    """oneDNN multiplies bf16 natively here (AVX512-BF16 or AMX) and will pack weights for it."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 2)
        return True
    except (AttributeError, RuntimeError):
        return False


def split_parts(out_features: int, threads: int | None = None) -> int:
    """Column blocks for a weight of `out_features` rows: the thread count, or the largest count below
    it that divides the rows evenly."""
    threads = threads or torch.get_num_threads()
    return next(p for p in range(max(1, threads), 0, -1) if out_features % p == 0)


@functools.cache
def column_split_is_exact(out_features: int, in_features: int, rows: int, parts: int, dtype: torch.dtype) -> bool:
    """Whether the column split gives bitwise F.linear's result for this shape on this CPU (random
    values; the kernel's choice and summation order depend on the shape, not on the values)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=generator).to(dtype)
    weight = (torch.randn(out_features, in_features, generator=generator) * 0.02).to(dtype)
    split = _split_matmul(x, weight.view(parts, out_features // parts, in_features))
    return torch.equal(split, F.linear(x, weight))


def _split_matmul(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x [rows, in] by blocks [parts, out/parts, in] -> [rows, out]."""
    parts = blocks.shape[0]
    out = torch.bmm(x.expand(parts, -1, -1), blocks.transpose(1, 2))  # [parts, rows, out/parts]
    return out.transpose(0, 1).reshape(x.shape[0], -1)


def choose(precision: str, out_features: int, in_features: int, rows: int, exact: bool) -> str:
    """The kernel for a dense weight: exact=True only accepts kernels with F.linear's bits."""
    if forced is not None:
        return forced
    if precision == "bfloat16" and not exact and onednn_bf16():
        return ONEDNN
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    parts = split_parts(out_features)
    if parts > 1 and (not exact or column_split_is_exact(out_features, in_features, rows, parts, dtype)):
        return COLUMN_SPLIT
    return ATEN


class DenseMatmul:
    """x [rows, in] @ W.T for one weight, with the kernel chosen for it (rows: the fixed call size)."""

    def __init__(self, weight: torch.Tensor, precision: str, rows: int, exact: bool):
        self.weight = weight  # [out, in], contiguous, in the compute dtype
        out_features, in_features = weight.shape
        self.kernel = choose(precision, out_features, in_features, rows, exact)
        self.packed = None
        if self.kernel == ONEDNN:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
            self.weight = torch.empty(0, dtype=weight.dtype)  # the packed copy is the one used
        elif self.kernel == COLUMN_SPLIT:
            parts = split_parts(out_features)
            self.blocks = weight.view(parts, out_features // parts, in_features)
        self.shape = (out_features, in_features)

    def packed_bytes(self) -> int:
        """Bytes held by oneDNN's packed copy (not a torch tensor)."""
        return self.shape[0] * self.shape[1] * 2 if self.packed is not None else 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == ONEDNN:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        if self.kernel == COLUMN_SPLIT:
            return _split_matmul(x, self.blocks)
        return F.linear(x, self.weight)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """All rows at once in F.linear's shape (prefill, cross-attention keys: one request's rows)."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return F.linear(x, self.weight)


def report() -> dict[str, str]:
    """Which kernel each dense CPU precision takes here for the decoder's common shape (4096 x 1024 at
    the precision's row block): what /health and the benchmarks print. (float16 is not a CPU precision:
    no faster than bfloat16, above.)"""
    rows = {"float32": 2, "bfloat16": 8}
    out = {}
    for precision, n in rows.items():
        kernel = choose(precision, 4096, 1024, n, exact=precision == "float32")
        out[precision] = f"{kernel} x{split_parts(4096)}" if kernel == COLUMN_SPLIT else kernel
    return out
