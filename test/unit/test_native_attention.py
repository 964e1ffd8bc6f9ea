"""The engine's attention kernel (server/engine/native): against torch's attention, bit-for-bit batch
and thread independence, its input checks, its build cache, and the decode step that uses it."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lib.settings import Settings
from server.engine import native, qdynamic
from server.engine.decode import encode_text
from server.models.registry import ModelRegistry

SCALE = 0.125


@pytest.fixture(scope="module")
def kernel():
    module = native.kernels()
    if module is None:
        if shutil.which("c++") or shutil.which("g++"):  # a compiler is here: the build must work
            pytest.fail(f"the kernel did not build: {native.status()}")
        pytest.skip(f"no C++ compiler: {native.status()}")
    return module


def _requests(rows: list[int], heads: int, dim: int, positions: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    caches = [(torch.randn(r, heads, positions, dim, generator=gen).to(dtype),) for r in rows]
    return [(c[0], torch.randn(c[0].shape, generator=gen).to(dtype)) for c in caches]


def _torch_attend(q, keys, values, lengths, k_new=None, v_new=None):
    """What the engine's torch path computes: write the new keys, then SDPA over an fp32 prefix."""
    heads, dim = keys[0].shape[1], keys[0].shape[3]
    out, row = [], 0
    for k, v, length in zip(keys, values, lengths, strict=True):
        rows = k.shape[0]
        if k_new is not None:
            k[:, :, length - 1] = k_new[row : row + rows].view(rows, heads, dim)
            v[:, :, length - 1] = v_new[row : row + rows].view(rows, heads, dim)
        o = F.scaled_dot_product_attention(
            q[row : row + rows].view(rows, heads, 1, dim),
            k[:, :, :length].float(),
            v[:, :, :length].float(),
            scale=SCALE,
        )
        out.append(o.transpose(1, 2).reshape(rows, heads * dim))
        row += rows
    return torch.cat(out)


def _step_inputs(rows: int, heads: int, dim: int, seed: int = 1):
    """q, k_new, v_new as the step passes them: column slices of one fused [rows, 3 * width] qkv."""
    width = heads * dim
    qkv = torch.randn(rows, 3 * width, generator=torch.Generator().manual_seed(seed))
    return qkv[:, :width], qkv[:, width : 2 * width], qkv[:, 2 * width :]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [64, 8, 24])  # the real head_dim, the tiny models', and one with a tail
def test_matches_torch_attention_and_writes_the_same_cache(kernel, dtype, dim):
    heads, rows = 4, [2, 1, 2]
    lengths = [37, 1, 130]
    ours = _requests(rows, heads, dim, 160, dtype)
    theirs = [(k.clone(), v.clone()) for k, v in ours]
    q, k_new, v_new = _step_inputs(sum(rows), heads, dim)

    got = kernel.attend(q, [k for k, _ in ours], [v for _, v in ours], lengths, SCALE, k_new, v_new)
    want = _torch_attend(q, [k for k, _ in theirs], [v for _, v in theirs], lengths, k_new, v_new)

    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for (k, v), (k_ref, v_ref) in zip(ours, theirs, strict=True):  # rounded as torch's .to() rounds
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_request_gets_the_same_bits_alone_batched_and_at_any_thread_count(kernel, dtype):
    heads, dim, rows = 8, 64, [2, 2, 1, 2]
    lengths = [200, 3, 77, 150]
    base = _requests(rows, heads, dim, 256, dtype, seed=4)
    q, k_new, v_new = _step_inputs(sum(rows), heads, dim, seed=5)

    def run(pick: list[int], threads: int) -> torch.Tensor:
        first = [sum(rows[:i]) for i in range(len(rows))]
        sel = torch.cat([torch.arange(first[i], first[i] + rows[i]) for i in pick])
        caches = [(base[i][0].clone(), base[i][1].clone()) for i in pick]
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return kernel.attend(
                q[sel],
                [k for k, _ in caches],
                [v for _, v in caches],
                [lengths[i] for i in pick],
                SCALE,
                k_new[sel],
                v_new[sel],
            )
        finally:
            torch.set_num_threads(before)

    batched = run([0, 1, 2, 3], threads=2)
    assert torch.equal(run([0, 1, 2, 3], threads=1), batched)
    assert torch.equal(run([3], threads=2), batched[5:7])
    assert torch.equal(run([2, 0], threads=1), torch.cat([batched[4:5], batched[0:2]]))


def test_without_new_keys_it_reads_only(kernel):
    """The cross-attention form: text keys and values, nothing written."""
    keys, values = zip(*_requests([1, 1], 4, 16, 9, torch.float32, seed=7), strict=True)
    snapshot = [t.clone() for t in keys + values]
    q = torch.randn(2, 64)
    got = kernel.attend(q, list(keys), list(values), [9, 5], SCALE)
    torch.testing.assert_close(got, _torch_attend(q, keys, values, [9, 5]), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(keys + values, snapshot, strict=True))


def test_bad_inputs_are_refused_with_what_is_wrong(kernel):
    ((k, v),) = _requests([2], 4, 16, 10, torch.float32)
    q = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="length 11 outside 1..10"):
        kernel.attend(q, [k], [v], [11], SCALE)
    with pytest.raises(RuntimeError, match="length 0 outside"):
        kernel.attend(q, [k], [v], [0], SCALE)
    with pytest.raises(RuntimeError, match=r"q must be \[2, 64\]"):
        kernel.attend(torch.randn(3, 64), [k], [v], [4], SCALE)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        kernel.attend(q, [k.half()], [v.half()], [4], SCALE)
    with pytest.raises(RuntimeError, match="come together"):
        kernel.attend(q, [k], [v], [4], SCALE, torch.randn(2, 64))


def test_builds_are_keyed_by_level_and_reused(kernel, tmp_path, monkeypatch):
    here = native.level()
    assert native.status()["kernels"] == "native" and native.status()["level"] == here
    paths = {name: native.build_path(name) for name in native.LEVELS}
    assert len(set(paths.values())) == len(paths)  # one build per level, side by side
    # A build that is present is loaded as it is: no compiler is asked.
    from torch.utils import cpp_extension

    def no_compiler(**_kwargs):
        raise AssertionError("rebuilt a cached build")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    assert native.build(here) == native._library(paths[here])
    # A failed build leaves nothing behind in the cache directory.
    with pytest.raises(AssertionError):
        native.build(here, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_build_is_renamed_into_place_whole_and_readable_by_all(tmp_path, monkeypatch):
    """The build directory appears at once with the library alone, readable by other users (the
    image's server runs as another user than the build)."""
    from torch.utils import cpp_extension

    def fake_compiler(name, sources, build_directory, **_kwargs):
        assert sources == [str(native.SOURCE)]
        (Path(build_directory) / f"{name}.so").write_bytes(b"library")
        (Path(build_directory) / "kernels.o").write_bytes(b"object")
        (Path(build_directory) / "build.ninja").write_text("rules")

    monkeypatch.setattr(cpp_extension, "load", fake_compiler)
    path = native.build("baseline", tmp_path)
    assert path.parent == native.build_path("baseline", tmp_path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert list(tmp_path.iterdir()) == [path.parent]  # no temporary directory left behind
    assert native.build("baseline", tmp_path) == path  # present: not built again
    # `python -m server.engine.native` (what `make kernels` runs) builds each level it is given.
    assert native.main(["--dir", str(tmp_path), "--levels", "baseline", "x86-64-v3"]) == 0
    assert native._library(native.build_path("x86-64-v3", tmp_path)) is not None


@pytest.mark.parametrize(
    ("here", "built"),
    [("x86-64-v4", ["x86-64-v4", "x86-64-v3"]), ("x86-64-v3", ["x86-64-v3"]), ("baseline", ["baseline"])],
)
def test_make_kernels_builds_this_cpus_level_and_avx2s_below_it(monkeypatch, here, built):
    """On AVX-512 machines the tests and benchmarks also hold the kernels to AVX2 (x86-64-v3)."""
    monkeypatch.setattr(native, "level", lambda: here)
    assert native.usable_levels() == built


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("AUDIOCRAFT_NATIVE", "0")
    native.kernels.cache_clear()
    try:
        assert native.kernels() is None
        assert native.status() == {"kernels": "torch", "reason": "AUDIOCRAFT_NATIVE=0"}
    finally:
        monkeypatch.delenv("AUDIOCRAFT_NATIVE")
        native.kernels.cache_clear()
        native.kernels()


@pytest.mark.parametrize("precision", ["int8-dynamic", "bfloat16"])
@pytest.mark.parametrize("guided", ["all", "mixed"])
def test_the_decode_step_runs_natively_and_agrees_with_torch(kernel, tiny_hub, precision, guided):
    """The same steps three ways: the whole step in one native call (int8-dynamic), the Python step
    over the kernels, and torch's ops alone. They agree closely (the whole step has its own layer norm
    and GELU; each is row-wise, so batch independence holds for each: test_fast.py)."""
    lm = ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype=precision)).get("musicgen-small")
    fast = lm.fast_lm()
    assert fast.native is kernel
    assert (fast.decoder is not None) == (precision == "int8-dynamic")
    if precision == "int8-dynamic":  # the weights are in the layout of the engine's own int8 matmul, where it has one
        assert qdynamic.is_own(fast.layers[0].fc1.packed, kernel) == bool(qdynamic.own_kernel(kernel))
    k_books = lm.num_codebooks
    with torch.inference_mode():
        first = encode_text(lm, "warm analog synth", with_null=True)
        second = encode_text(lm, "rain on a tin roof", with_null=guided == "all")
        rows = 4 if guided == "all" else 3
        cond_rows, cond_step = (torch.tensor([0, 2]), 2) if guided == "all" else (torch.tensor([0, 2]), None)
        runs = {}
        forms = [("whole", True, True, True), ("python", True, False, True), ("torch", False, False, True)]
        if precision == "int8-dynamic":  # bench/generate.py's int8-dynamic/fbgemm: the whole step on fbgemm's
            forms.append(("fbgemm", True, True, False))
        for name, on, whole, own in forms:
            caches = [fast.new_cache(2, 10, first), fast.new_cache(rows - 2, 10, second)]
            gen = torch.Generator().manual_seed(0)
            fast.use_native(on, whole_step=whole, own_int8=own)
            if name == "fbgemm":
                assert not qdynamic.is_own(fast.layers[0].fc1.packed, kernel)
            try:
                steps = []
                for _ in range(7):
                    tokens = torch.randint(0, lm.start_token_id + 1, (rows, k_books), generator=gen)
                    steps.append(fast.step(tokens, caches, cond_rows, cond_step))
            finally:
                fast.use_native(True)
            runs[name] = torch.stack(steps)
    torch.testing.assert_close(runs["whole"], runs["python"], rtol=1e-4, atol=1e-4)
    if "fbgemm" in runs:
        torch.testing.assert_close(runs["fbgemm"], runs["whole"], rtol=1e-4, atol=1e-4)
    tolerance = 1e-4 if precision == "int8-dynamic" else 5e-2  # bf16 caches: torch attends in bf16
    torch.testing.assert_close(runs["python"], runs["torch"], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("levels", [255, 127])  # VNNI's full range, and AVX2's 7 bits
def test_batched_int8_arithmetic_gives_torch_ops_bits(kernel, levels, monkeypatch):
    """qdynamic.linear over several requests: the two native calls against the torch ops, bit for bit."""
    from server.engine import qdynamic
    from server.engine.fastlm import quantize_int8

    monkeypatch.setattr(qdynamic, "activation_levels", lambda: levels)
    gen = torch.Generator().manual_seed(3)
    codes, channel_scale = quantize_int8(torch.randn(96, 256, generator=gen) * 0.05)
    packed = qdynamic.prepack(codes)
    sums = torch.from_numpy(codes.numpy().sum(axis=1, dtype="int32")).float()
    # Requests of one and two rows, one all positive (its range is pinned at 0), one with an outlier.
    x = torch.randn(7, 256, generator=gen)
    x[2:4] = x[2:4].abs()
    x[6, 5] = 40.0
    spans = [(0, 2), (2, 4), (4, 5), (5, 7)]
    want = qdynamic.linear(x, spans, packed, sums, channel_scale, kernels=None)
    got = qdynamic.linear(x, spans, packed, sums, channel_scale, kernels=kernel)
    assert torch.equal(got, want)
    for a, b in spans:  # and each request alone, through fbgemm's own quantization
        assert torch.equal(qdynamic.linear(x[a:b], None, packed, sums, channel_scale), got[a:b])
