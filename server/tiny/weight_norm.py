"""Weight-norm tensors under the names the released checkpoints use."""

from __future__ import annotations

from pathlib import Path


def legacy_weight_norm_names(weights: Path) -> None:
    """Rename weight-norm tensors to the names the released checkpoints use.

    Current torch saves weight norm as `<conv>.parametrizations.weight.original0/1`; the released
    repos were converted with the older `weight_norm`, whose tensors are `<conv>.weight_g/weight_v`.
    transformers renames those on load, so keeping the released names tests that path too.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    renames = {
        ".parametrizations.weight.original0": ".weight_g",
        ".parametrizations.weight.original1": ".weight_v",
    }
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        tensors = {}
        for key in f.keys():
            new_key = key
            for old, new in renames.items():
                if key.endswith(old):
                    new_key = key[: -len(old)] + new
            tensors[new_key] = f.get_tensor(key)
    save_file(tensors, str(weights), metadata=metadata)
