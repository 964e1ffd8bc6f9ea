"""The dense decode matmuls (server/engine/dense.py): each kernel this CPU offers against F.linear.

Which kernel a precision takes depends on the CPU (oneDNN's packed bf16 needs AVX512-BF16 or AMX;
the column split's bits are checked against F.linear per shape), so these tests run every kernel
the CPU has and assert only what holds on all of them: float32 keeps F.linear's bits, every kernel
is close to the float64 product, and a row's result does not depend on the other rows of its call.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from server.engine import dense
from server.engine.fastlm import PackedLinear

CPU = torch.device("cpu")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ROWS = {"float32": 2, "bfloat16": 8, "float16": 8}
# Relative error of each dtype's product against float64 (its rounding, summed over 256 inputs).
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 3e-3}
SHAPES = [(96, 64), (256, 64), (64, 256)]  # [out, in]; 96 splits in 2 and 3, as 64 does in 2


def kernels_here(precision: str) -> list[str]:
    out = [dense.ATEN, dense.COLUMN_SPLIT]
    if precision == "bfloat16" and dense.onednn_bf16():
        out.append(dense.ONEDNN)
    return out


def matmul_with(kernel: str, weight: torch.Tensor, precision: str) -> dense.DenseMatmul:
    m = dense.DenseMatmul(weight, precision, ROWS[precision], exact=False)
    if m.kernel != kernel:  # build the one asked for (the choice is the CPU's)
        m.kernel = kernel
        m.weight = weight
        m.packed = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS[precision]) if kernel == dense.ONEDNN else None
        parts = dense.split_parts(weight.shape[0], threads=max(2, torch.get_num_threads()))
        m.blocks = weight.view(parts, weight.shape[0] // parts, weight.shape[1])
    return m


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_kernel_is_close_to_the_exact_product(precision, shape):
    gen = torch.Generator().manual_seed(1)
    weight = (torch.randn(shape, generator=gen) * 0.05).to(DTYPES[precision])
    x = torch.randn(ROWS[precision], shape[1], generator=gen).to(DTYPES[precision])
    want = x.double() @ weight.double().T
    for kernel in kernels_here(precision):
        got = matmul_with(kernel, weight, precision)(x).double()
        assert got.shape == want.shape
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err < TOLERANCE[precision], (kernel, err)


@pytest.mark.parametrize("precision", list(DTYPES))
def test_a_rows_result_does_not_depend_on_the_other_rows(precision):
    gen = torch.Generator().manual_seed(2)
    weight = (torch.randn(256, 64, generator=gen) * 0.05).to(DTYPES[precision])
    block = torch.randn(ROWS[precision], 64, generator=gen).to(DTYPES[precision])
    other = block.clone()
    other[1:] = torch.randn(ROWS[precision] - 1, 64, generator=gen).to(DTYPES[precision])
    other[1:3] = 0  # padding rows, as the last block of a batch has
    for kernel in kernels_here(precision):
        m = matmul_with(kernel, weight, precision)
        assert torch.equal(m(block)[0], m(other)[0]), kernel


@pytest.mark.parametrize("shape", [*SHAPES, (4096, 1024)])
def test_float32_keeps_f_linear_bits(shape):
    """float32 takes a kernel only where its bits are F.linear's (transformers' own matmul)."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(shape, generator=gen) * 0.05
    x = torch.randn(2, shape[1], generator=gen)
    lin = PackedLinear(weight, None, "float32", CPU)
    assert lin.dense.kernel in (dense.ATEN, dense.COLUMN_SPLIT)
    assert torch.equal(lin(x), F.linear(x, weight))
    # The weight is shared, not copied (fastlm's fused q/k/v views rely on it).
    assert lin.weight.data_ptr() == weight.data_ptr()


def test_the_split_check_compares_with_f_linear():
    exact = dense.column_split_is_exact(96, 64, 2, 3, torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, generator=gen)
    weight = torch.randn(96, 64, generator=gen) * 0.02
    same = torch.equal(dense._split_matmul(x, weight.view(3, 32, 64)), F.linear(x, weight))
    assert exact == same


def test_split_parts_divide_the_rows():
    assert dense.split_parts(4096, threads=2) == 2
    assert dense.split_parts(96, threads=4) == 4
    assert dense.split_parts(10, threads=4) == 2
    assert dense.split_parts(7, threads=4) == 1
    assert dense.split_parts(7, threads=0) >= 1


def test_the_report_names_a_kernel_this_cpu_has():
    report = dense.report()
    assert set(report) == {"float32", "bfloat16"}  # the CPU's dense precisions
    for precision, kernel in report.items():
        assert kernel.split()[0] in kernels_here(precision)
    assert report["float32"].split()[0] != dense.ONEDNN  # float32 keeps transformers' bits
