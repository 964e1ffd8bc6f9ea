"""The engine's own autoregressive loop over transformers' MusicGen modules.

Owning the loop (instead of calling generate()) is what gives each request in a batch its own
seed and sampling parameters, progress per step, cancellation between steps, and later streaming
and continuous batching. Greedy decoding is token-identical to MusicgenForConditionalGeneration.generate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from server.engine import delay
from server.engine.loaded import LoadedModel
from server.engine.sampling import guide, sample


@dataclass(frozen=True)
class DecodeRequest:
    prompt: str
    n_frames: int
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0


class Cancelled(Exception):
    """Every request of the batch was cancelled."""


# on_step(step, total_steps); is_cancelled(request_index) -> bool
StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[int], bool]


def _encode_text(lm: LoadedModel, prompts: Sequence[str], with_null: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional rows, then (for guidance) null rows with zeroed states and mask, in one batch."""
    model = lm.model
    tokens = lm.tokenizer(list(prompts), padding=True, return_tensors="pt").to(lm.device)
    hidden = model.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    mask = tokens.attention_mask
    if with_null:
        hidden = torch.cat([hidden, torch.zeros_like(hidden)], dim=0)
        mask = torch.cat([mask, torch.zeros_like(mask)], dim=0)
    if getattr(model, "enc_to_dec_proj", None) is not None:
        hidden = model.enc_to_dec_proj(hidden)
    return hidden * mask[..., None], mask


@torch.inference_mode()
def generate_codes(
    lm: LoadedModel,
    requests: Sequence[DecodeRequest],
    on_step: StepCallback | None = None,
    is_cancelled: CancelCheck | None = None,
) -> list[torch.Tensor | None]:
    """Token codes [K, n_frames] per request (None for a request cancelled mid-way)."""
    batch = len(requests)
    k_books = lm.num_codebooks
    delays = delay.codebook_delays(k_books, lm.stereo)
    n_frames = torch.tensor([r.n_frames for r in requests])
    steps_each = [delay.num_steps(r.n_frames, delays) for r in requests]
    total_steps = max(steps_each)
    length = total_steps + 1

    with_null = any(r.cfg_coef != 1.0 for r in requests)
    enc_states, enc_mask = _encode_text(lm, [r.prompt for r in requests], with_null)

    keep = delay.valid_positions(n_frames, delays, length).to(lm.device)
    sequence = torch.full((batch, k_books, length), lm.pad_token_id, dtype=torch.long, device=lm.device)
    sequence[:, :, 0] = lm.start_token_id
    cfg = torch.tensor([r.cfg_coef for r in requests], device=lm.device).view(-1, 1, 1)
    generators = [torch.Generator(device=lm.device).manual_seed(r.seed) for r in requests]
    cancelled = [False] * batch
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    decoder = lm.model.decoder

    for step in range(total_steps):
        tokens = sequence[:, :, step]
        if with_null:
            tokens = torch.cat([tokens, tokens], dim=0)
        out = decoder(
            input_ids=tokens.reshape(-1, 1),
            encoder_hidden_states=enc_states,
            encoder_attention_mask=enc_mask,
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float().view(-1, k_books, out.logits.shape[-1])
        if with_null:
            cond, uncond = logits[:batch], logits[batch:]
            logits = torch.where(cfg == 1.0, cond, guide(cond, uncond, cfg))
        next_tokens = torch.stack(
            [sample(logits[i], r.temperature, r.top_k, r.top_p, generators[i]) for i, r in enumerate(requests)]
        )
        col = step + 1
        sequence[:, :, col] = torch.where(keep[:, :, col], next_tokens, sequence[:, :, col])
        if on_step is not None:
            on_step(col, total_steps)
        if is_cancelled is not None:
            cancelled = [c or is_cancelled(i) for i, c in enumerate(cancelled)]
            live = [i for i in range(batch) if not cancelled[i] and steps_each[i] > col]
            if all(cancelled):
                raise Cancelled()
            if not live:
                break

    return [None if cancelled[i] else delay.undelay(sequence[i], r.n_frames, delays) for i, r in enumerate(requests)]


@torch.inference_mode()
def codes_to_audio(lm: LoadedModel, codes: torch.Tensor) -> torch.Tensor:
    """[K, n_frames] codes -> [channels, samples] float32 waveform at the model's native rate.
    Stereo models interleave L/R codebooks; each channel is decoded on its own, as transformers does."""
    codec = lm.model.audio_encoder
    frames = codes[None, None]  # [chunks=1, batch=1, K, T]
    if lm.stereo:
        left = codec.decode(frames[:, :, ::2], audio_scales=[None]).audio_values
        right = codec.decode(frames[:, :, 1::2], audio_scales=[None]).audio_values
        audio = torch.cat([left, right], dim=1)
    else:
        audio = codec.decode(frames, audio_scales=[None]).audio_values
    return audio[0].float().cpu()
