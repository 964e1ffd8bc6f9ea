"""A piece of a MusicGen timeline decoded by MBD instead of EnCodec alone.

The MBD checkpoint is mono: a stereo model's left and right codebooks (interleaved L/R) decode as a
batch of two mono rows, as AudioCraft's MusicGen app does (`get_left_right_codes`, then
`tokens_to_wav` on both), so the equaliser's statistics span both channels as they do there.
Long timelines decode piece by piece with the same context on each side as EnCodec's pieces
(server/engine/decode.py); each piece draws its noise from its own seed.
"""

from __future__ import annotations

import torch

from lib.catalogue import ModelSpec, mbd_for
from server.engine.decode import DECODE_CONTEXT_FRAMES
from server.engine.errors import UnsupportedRequest
from server.models.loaded import TextToAudioLM
from server.models.mbd import DiffusionDecoder

_PIECE_SEED_STEP = 0x2545F4914F6CDD1D  # piece i > 0 draws from seed + i * this (mod 2^63)


def spec_for(model: ModelSpec) -> ModelSpec:
    """The catalogue's MBD for this model's tokens; UnsupportedRequest (422) if there is none."""
    found = mbd_for(model)
    if found is None:
        raise UnsupportedRequest(
            f"there is no Multi-Band Diffusion decoder for {model.name} ({model.sample_rate} Hz EnCodec)",
            field="decoder", hint='use "decoder": "encodec"',
        )  # fmt: skip
    return found


def check_pair(lm: TextToAudioLM, mbd: DiffusionDecoder) -> None:
    if lm.sample_rate != mbd.sample_rate:
        raise UnsupportedRequest(
            f"{mbd.spec.name} decodes {mbd.sample_rate} Hz EnCodec tokens; {lm.spec.name} makes {lm.sample_rate} Hz",
            field="decoder", hint='use "decoder": "encodec" with this model',
        )  # fmt: skip


def piece_seed(seed: int, index: int) -> int:
    return seed if index == 0 else (seed + index * _PIECE_SEED_STEP) % (2**63)


@torch.inference_mode()
def rows_to_audio(codec, mbd: DiffusionDecoder, rows: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """MBD's audio [B, samples] for B mono rows of codes [B, K, frames] (AudioCraft's tokens_to_wav);
    `codec` is the transformers EncodecModel whose tokens they are."""
    rows = rows.to(codec.device)
    encodec = codec.decode(rows[None], audio_scales=[None]).audio_values  # [B, 1, samples]
    latent = codec.quantizer.decode(rows.transpose(0, 1))  # [B, D, frames]
    gen = torch.Generator().manual_seed(seed)
    return mbd.multiband.tokens_to_audio(latent.float(), encodec.float(), steps, gen)[:, 0]


def decode_piece(
    lm: TextToAudioLM, mbd: DiffusionDecoder, codes: torch.Tensor, start: int, end: int, steps: int, seed: int
) -> torch.Tensor:
    """The audio [channels, (end - start) * hop] of frames [start, end) of the codes [K, n_frames]."""
    hop = round(lm.sample_rate / lm.frame_rate_hz)
    first, last = max(0, start - DECODE_CONTEXT_FRAMES), min(codes.shape[-1], end + DECODE_CONTEXT_FRAMES)
    frames = codes[:, first:last]
    rows = torch.stack([frames[::2], frames[1::2]]) if lm.stereo else frames[None]
    audio = rows_to_audio(lm.model.audio_encoder, mbd, rows, steps, seed)
    skip = (start - first) * hop
    return audio[:, skip : skip + (end - start) * hop].float().cpu()
