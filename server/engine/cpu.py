"""What CPU this is: its model name and the vector extensions the kernels choose by.

The same code runs on AVX2-only CPUs and on CPUs with AVX-512 and AMX, and torch, MKL, oneDNN and
fbgemm pick other kernels on each, so every benchmark names the CPU (`label()`). The engine itself
does not choose by these flags: where a kernel's behaviour matters it asks the kernel
(`qdynamic.activation_levels()`, `dense.choose()`), which also sees the libraries' own ISA settings
(`AVX2_ONLY_ENV`). `report()` is what /health and the benchmarks print: the CPU and the kernel each
precision takes on it, asked once at start-up.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# /proc/cpuinfo flags -> the names used in docs and tables.
_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
}

# Environment that holds torch, MKL, oneDNN and fbgemm to their AVX2 kernels on a CPU that has more:
# how tests and benchmarks check the AVX2 paths on an AVX-512 machine.
AVX2_ONLY_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name with family and model numbers, flags) of the first CPU in /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine(), frozenset()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name", platform.machine())
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    return model, frozenset(fields.get("flags", "").split())


def model_name() -> str:
    return _cpuinfo()[0]


def isa() -> list[str]:
    """The vector extensions present, in the order of _FLAGS (e.g. ["AVX2", "AVX-512", "AVX512-BF16"])."""
    flags = _cpuinfo()[1]
    return [name for flag, name in _FLAGS.items() if flag in flags]


def label() -> str:
    """One line for a benchmark table: model name and extensions, with what is missing said."""
    present = isa()
    missing = [name for name in ("AVX-512", "AMX") if name not in present]
    text = f"{model_name()}: {', '.join(present) or 'no AVX2'}"
    text += f"; no {', no '.join(missing)}" if missing else ""
    held = [k for k, v in AVX2_ONLY_ENV.items() if os.environ.get(k, "").lower() == v.lower()]
    return text + (f" (kernels held to AVX2 by {', '.join(held)})" if held else "")


def report() -> dict:
    """The CPU and the matmul kernel each precision takes on it (imports torch: call it where models run)."""
    from server.engine import dense, native, qdynamic

    levels = qdynamic.activation_levels()
    own = qdynamic.own_kernel(native.kernels()) if native.status().get("kernels") == "native" else ""
    matmul = f"the engine's own ({own})" if own else "fbgemm"
    int8 = f"{matmul} int8-dynamic, {levels + 1} activation levels"
    return {"model": model_name(), "isa": isa(), "kernels": dense.report() | {"int8-dynamic": int8}}
