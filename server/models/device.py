"""Device and precision choice.

A precision names how the language model's weights are stored and what its matmuls compute in:

| precision | weights | matmul inputs | residual stream, norms, softmax | where |
|---|---|---|---|---|
| float32 | fp32 | fp32 | fp32 | CPU, CUDA (the reference: token-identical to transformers) |
| bfloat16 | bf16 | bf16 | fp32 | CPU (AVX512-BF16 / AMX), CUDA |
| float16 | fp16 | fp16 | fp32 | CUDA |
| int8 | int8, one scale per output channel | bf16 | fp32 | CPU (weight-only: activations are never quantized) |
| int8-dynamic | int8, one scale per output channel | uint8, one scale per request, int32 sums | fp32 | CPU (x86) |

The text encoder (T5) and the audio codec (EnCodec) always run in float32: they run once per request,
and half precision in T5 is known to overflow. docs/benchmarks.md has the measured speed and fidelity.

A precision travels as its name (a string): the loaded models carry it (`precision`), and the decoder
packing (server/engine/fastlm.py) picks its kernels by it.
"""

from __future__ import annotations

import torch

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int8-dynamic")
# The dtype the dense precisions store and multiply in; the int8 ones multiply in bfloat16 (weight-only)
# or quantize fp32 activations themselves (server/engine/fastlm.py).
_DENSE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Which precisions a device runs. float16 on CPU is no faster than bfloat16 (measured on AMD Zen 4 and
# with AVX2 kernels: server/engine/dense.py), so it is no CPU precision; the int8 kernels are CPU ones.
_SUPPORTED = {
    "cpu": ("float32", "bfloat16", "int8", "int8-dynamic"),
    "cuda": ("float32", "bfloat16", "float16"),
}


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 matmuls are emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_precision(device: torch.device) -> str:
    """The fastest safe precision for the device (measured: docs/benchmarks.md).

    CPU: int8 dynamic (int8 weights and activations). The decoder step is bound by reading the
    weights, so a quarter of the fp32 bytes is the biggest single win, and torch's x86 quantized
    linear reads them at memory speed where the weight-only kernel does not. Measured for 5 s of
    musicgen-small against the weight-only int8 kernel: 8.5 s against 10.4 s on Intel AMX, 8.2 s
    against 10.6 s on AMD Zen 4, 8.3 s against 11.9 s with the kernels held to AVX2. On CPUs without
    VNNI the kernel takes 7-bit activations (server/engine/qdynamic.py), which costs some fidelity
    (sampled agreement with fp32 93.5 % against 95.4 %, real shape): still the fastest, and within
    the documented drift, so it stays the default there too; `int8` is the closer choice (97.5 %).
    Where torch has no x86 quantized engine (ARM builds have only qnnpack) the weight-only int8
    kernel is the default. CUDA: float16, as AudioCraft itself runs on GPU (autocast float16); the
    residual stream stays fp32 here.
    """
    if device.type == "cuda":
        return "float16"
    return "int8-dynamic" if has_x86_quantized_engine() else "int8"


def has_x86_quantized_engine() -> bool:
    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"x86", "fbgemm"})


def pick_precision(setting: str, device: torch.device) -> str:
    """The precision name for a `dtype` setting ("auto" or a name from PRECISIONS) on a device."""
    name = default_precision(device) if setting == "auto" else setting
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {setting!r}; choose auto or one of {', '.join(PRECISIONS)}")
    supported = _SUPPORTED.get(device.type, ("float32",))
    if name not in supported:
        raise ValueError(f"precision {name} is not available on {device.type}; choose one of {', '.join(supported)}")
    return name


def compute_dtype(precision: str) -> torch.dtype:
    """What the matmuls compute in: int8 weights are multiplied with bf16 activations."""
    return torch.bfloat16 if precision.startswith("int8") else _DENSE[precision]
