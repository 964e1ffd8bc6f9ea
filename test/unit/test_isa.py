"""The engine's numeric contracts on each kernel set torch may pick: this CPU's own, and AVX2 only.

An AVX-512 or AMX machine runs other MKL, oneDNN and fbgemm kernels than an AVX2-only one, and the
contracts must hold on both kinds: float32 is bitwise transformers' decoder, int8-dynamic never
saturates, and the CPU default stays within its documented drift. Each check runs in a child process,
once as the CPU comes and once held to AVX2 (server.engine.cpu.AVX2_ONLY_ENV); on an AVX2-only
machine the two take the same kernels, so both must pass everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.engine.cpu import AVX2_ONLY_ENV

ROOT = Path(__file__).resolve().parents[2]
KERNELS = {"native": {}, "avx2-only": AVX2_ONLY_ENV}

# The drift the default may have on the tiny model (docs/benchmarks.md §Precision fidelity states the
# measured figures for each CPU kind): mean logit error in units of fp32's logit std, and the share of
# sampled tokens (top-k 250, same noise) that equal fp32's.
MAX_ERR_MEAN = 0.05
MIN_SAMPLED = 0.93

CHILD = """
import json, torch
from engine_reference import teacher_forced, tiny_lm
from server.engine import native, qdynamic
from server.models.device import default_precision
from server.engine.fastlm import PackedLinear

# Worst case for the int8 kernel (the engine's own where it has one, else fbgemm's): weight codes near
# +-127, activations spanning their whole range.
kernels = native.kernels()
own = qdynamic.own_kernel(kernels)
torch.manual_seed(0)
weight = torch.randn(64, 256).sign() * (1 + torch.rand(64, 256))
lin = PackedLinear(weight, None, "int8-dynamic", torch.device("cpu"), kernels=kernels)
x = torch.rand(2, 256) * 2 - 1
x[0, 0], x[0, 1] = -1.0, 1.0
dequantized = torch.round(weight / lin.scales[:, None]).double() * lin.scales.double()[:, None]
error = (lin(x).double() - x.double() @ dequantized.T).abs()
step = (x.max() - x.min()).item() / qdynamic.activation_levels()
bound = 0.5 * step * dequantized.abs().sum(dim=1) + 1e-4  # half a step on every input, at most
own_bits = None
if own:  # the engine's int8 matmul against fbgemm's, three requests in one call
    codes = qdynamic.codes_of(lin.packed, kernels)
    xs = torch.randn(9, 256)
    want = qdynamic.linear(xs, [(0, 2), (2, 3), (3, 9)], qdynamic.prepack(codes), lin.weight_sums, lin.scales)
    got = kernels.int8_linear(lin.packed, xs, [2, 3, 9], qdynamic.activation_levels(), lin.scales)
    own_bits = torch.equal(got, want)
precision = default_precision(torch.device("cpu"))
lm = tiny_lm("musicgen-small")
result = teacher_forced(lm, [precision], steps=30)
print(json.dumps({
    "capability": torch.backends.cpu.get_cpu_capability(),
    "levels": qdynamic.activation_levels(),
    "native": native.status(),
    "own_int8": own,
    "own_int8_bits": own_bits,
    "int8_within_rounding": bool((error <= bound).all()),
    "int8_worst_excess": float((error - bound).max()),
    "precision": precision,
    "bitwise": result["float32_bitwise_vs_transformers"],
    "drift": result[precision],
}))
"""


def _run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY_ENV} | env_extra
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "test")])
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=list(KERNELS))
def contracts(request) -> dict:
    result = _run(KERNELS[request.param])
    if request.param == "avx2-only":
        assert result["capability"] == "AVX2", result
    return result


def test_float32_is_bitwise_transformers(contracts):
    assert contracts["bitwise"], contracts


def test_int8_dynamic_is_exact_up_to_activation_rounding(contracts):
    """No saturation: every output is within half an activation step of the exact product."""
    assert contracts["int8_within_rounding"], contracts


def test_the_engines_int8_matmul_runs_and_gives_fbgemms_bits(contracts):
    """Where the engine's kernels are built, their int8 matmul runs on both kernel sets (VNNI, or
    AVX2's pairs with 7-bit activations) and sums to fbgemm's numbers exactly."""
    if contracts["native"]["kernels"] != "native":
        pytest.skip(f"the engine's kernels are not built here: {contracts['native']}")
    if contracts["native"]["level"] == "baseline":
        pytest.skip("the baseline build (no AVX2) has no int8 matmul of its own: fbgemm's runs")
    if contracts["levels"] > 127 and contracts["capability"] != "AVX512":
        pytest.skip("fbgemm sums 8-bit codes here (VNNI under AVX2 kernels); AVX2's pairs would saturate")
    assert contracts["own_int8"], contracts
    assert contracts["own_int8_bits"], contracts


def test_the_default_stays_within_the_documented_drift(contracts):
    drift = contracts["drift"]
    assert drift["err_mean"] < MAX_ERR_MEAN, contracts
    assert drift["sampled"] > MIN_SAMPLED, contracts


def test_benchmarks_name_the_cpu_and_held_kernels(monkeypatch):
    from server.engine import cpu

    for name in AVX2_ONLY_ENV:
        monkeypatch.delenv(name, raising=False)
    label = cpu.label()
    assert label.startswith(cpu.model_name()) and "held" not in label
    assert ("AVX-512" in cpu.isa()) == ("no AVX-512" not in label)
    for name, value in AVX2_ONLY_ENV.items():
        monkeypatch.setenv(name, value)
    assert "kernels held to AVX2" in cpu.label()
