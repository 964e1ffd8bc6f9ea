"""transformers' own generate() as the oracle of the engine's decode loop."""

from __future__ import annotations

import torch


def reference_generate(lm, **generate_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(greedy codes [K, frames], audio) from the model's generate(). generate() returns audio only,
    so the codes are read where it hands them to the codec."""
    seen: list[torch.Tensor] = []
    codec = lm.model.audio_encoder
    original = codec.decode

    def spy(codes, *args, **kwargs):
        seen.append(codes.clone())
        return original(codes, *args, **kwargs)

    codec.decode = spy
    try:
        audio = lm.model.generate(do_sample=False, **generate_kwargs)
    finally:
        del codec.decode
    if lm.stereo:  # decoded as left (even codebooks) then right (odd): interleave back
        codes = torch.stack([seen[0][0, 0], seen[1][0, 0]], dim=1).reshape(-1, seen[0].shape[-1])
    else:
        codes = seen[0][0, 0]
    return codes, audio[0]
