"""htdemucs: the released model's constructor arguments, and a tiny one with the same framing.

`REAL_KWARGS` are the init arguments of htdemucs' one model (signature 955717e8), as its checkpoint
stores them; `TINY_KWARGS` keep the structure (sources, rate, channels, n_fft, depth, strides, the
cross-domain transformer with both its layer kinds, the bottom channel change) and shrink the
widths and the segment. Both are written in the two published layouts (server/hub/
demucs_layout.py): the hub's `<name>.yaml` + `<sig>.safetensors` (demucs 4.1's export: klass, args and
kwargs as JSON metadata, the state in half precision as demucs saves it), and the legacy pickle
`<sig>-<sha256[:8]>.th` that demucs' own repo holds. Benchmarks use the real shape with random weights.
"""

from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

SIGNATURE = "955717e8"
SOURCES = ["drums", "bass", "other", "vocals"]
_COMMON: dict[str, Any] = {"sources": SOURCES, "audio_channels": 2, "samplerate": 44100, "segment": Fraction(39, 5)}
REAL_KWARGS: dict[str, Any] = {
    **_COMMON, "channels": 48, "channels_time": None, "growth": 2, "nfft": 4096, "wiener_iters": 0,
    "end_iters": 0, "wiener_residual": False, "cac": True, "depth": 4, "rewrite": True, "multi_freqs": [],
    "multi_freqs_depth": 3, "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True, "kernel_size": 8,
    "stride": 4, "time_stride": 2, "context": 1, "context_enc": 0, "norm_starts": 4, "norm_groups": 4,
    "dconv_mode": 1, "dconv_depth": 2, "dconv_comp": 8, "dconv_init": 0.001, "bottom_channels": 512,
    "t_layers": 5, "t_hidden_scale": 4.0, "t_heads": 8, "t_dropout": 0.0, "t_layer_scale": True,
    "t_gelu": True, "t_emb": "sin", "t_max_positions": 10000, "t_max_period": 10000.0,
    "t_weight_pos_embed": 1.0, "t_cape_mean_normalize": True, "t_cape_augment": True,
    "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4], "t_sin_random_shift": 0, "t_norm_in": True,
    "t_norm_in_group": False, "t_group_norm": False, "t_norm_first": True, "t_norm_out": True,
    "t_weight_decay": 0.0, "t_lr": None, "t_sparse_self_attn": False, "t_sparse_cross_attn": False,
    "t_mask_type": "diag", "t_mask_random_seed": 42, "t_sparse_attn_window": 400, "t_global_window": 100,
    "t_sparsity": 0.95, "t_auto_sparsity": False, "t_cross_first": False, "rescale": 0.1,
}  # fmt: skip
# The segment is 1 s instead of 7.8 s: tests stay quick, and a test's melody of a few seconds spans
# several overlapping segments, so apply_model's blending is exercised too.
TINY_KWARGS: dict[str, Any] = {
    **REAL_KWARGS, "channels": 8, "dconv_comp": 4, "bottom_channels": 16, "t_layers": 2, "t_heads": 2,
    "t_hidden_scale": 2.0, "segment": Fraction(1, 1),
}  # fmt: skip


def build(kwargs: dict[str, Any], seed: int) -> torch.nn.Module:
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(**kwargs)
    # The layer scales start near zero (1e-3, 1e-4): random ones make every branch count, so a
    # dropped or swapped tensor changes the stems.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".scale"):
                param.copy_(0.5 + 0.5 * torch.rand(param.shape, generator=gen))
    return model.eval()


def _half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state as demucs serialises a model (serialize_model(half=True))."""
    return {k: v.detach().to("cpu", torch.half).contiguous() for k, v in model.state_dict().items()}


def save_hub_files(out: Path, model: torch.nn.Module, kwargs: dict[str, Any], name: str = "htdemucs") -> None:
    """demucs 4.1's hub layout: `<name>.yaml` and `<sig>.safetensors`."""
    from safetensors.torch import save_file

    from server.models.demucs import HTDEMUCS_CLASS, encode_json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.yaml").write_text(f"models: ['{SIGNATURE}']\n")
    metadata = {"klass": HTDEMUCS_CLASS, "args": json.dumps([]), "kwargs": json.dumps(encode_json(kwargs))}
    save_file(_half_state(model), str(out / f"{SIGNATURE}.safetensors"), metadata=metadata)


def save_th(out: Path, model: torch.nn.Module, kwargs: dict[str, Any]) -> Path:
    """The legacy pickle, named as demucs names it: `<sig>-<sha256[:8]>.th`."""
    from demucs.htdemucs import HTDemucs

    out.mkdir(parents=True, exist_ok=True)
    package = {"klass": HTDemucs, "args": [], "kwargs": dict(kwargs), "state": _half_state(model), "training_args": {}}
    buf = io.BytesIO()
    torch.save(package, buf)
    data = buf.getvalue()
    path = out / f"{SIGNATURE}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    return path


def save_files(out: Path, seed: int) -> None:
    """The tiny htdemucs repo's files (make-tiny)."""
    save_hub_files(out, build(TINY_KWARGS, seed), TINY_KWARGS)
