"""Weight preparation at load time: EnCodec's weight norm baked in, MusicGen's decoder packed.

Both run once per load, on a float32 transformers model, before the engine uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from server.engine.fastlm import FastLM


def bake_weight_norm(module: torch.nn.Module) -> None:
    """EnCodec's convolutions recompute weight = g * v / |v| on every call; compute it once.
    The weights are the same values, so the audio is bit-identical."""
    from torch.nn.utils import parametrize

    for child in module.modules():
        if parametrize.is_parametrized(child):
            for name in list(child.parametrizations.keys()):
                parametrize.remove_parametrizations(child, name, leave_parametrized=True)


def pack_decoder(
    model, precision: str, device: torch.device, ready: Callable[[torch.nn.Module], None] | None = None
) -> FastLM:
    """Pack a MusicGen-class model's decoder for the engine's step (FastLM) at `precision`, and put
    the rest of the model on the device. ready(module): returns once the module's weights are in
    (they may still be being read, server/models/streamed.py); each module is waited for before it
    is used, so the decoder's layers are packed as they arrive.

    The text encoder, the projections and EnCodec stay float32. At float32 the packed decoder shares
    the transformers weights, and the transformers decoder stays usable (the reference the tests
    compare against). At any other precision the transformers decoder's fp32 weights are released
    (moved to the meta device) as each layer is packed: the packed copy is the only one kept, so
    memory holds one decoder, not two.
    """
    ready = ready or _whole
    if precision == "float32":
        ready(model)
        model.to(device)
        return FastLM(model.decoder, precision, device)
    fast = FastLM(model.decoder, precision, device, release=True, ready=ready)
    ready(model.decoder)  # none of it still to come once it is released
    model.decoder.to("meta")
    for name, child in model.named_children():
        if name != "decoder":
            ready(child)
            child.to(device)
    return fast


def _whole(_module: torch.nn.Module) -> None:
    """Every weight is in memory already."""
