"""Helpers shared by the benchmarks: real-shape random-weight models, timing, peak RSS.

Random weights of the real shape cost the same compute and memory as the released ones
(docs: /work/shared/reference/model-shapes.md); nothing is downloaded.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager

import torch

# Decoder dims (hidden, layers, heads, ffn) of the released checkpoints.
DECODER_SHAPES = {
    "musicgen-small": (1024, 24, 16, 4096),
    "musicgen-medium": (1536, 48, 24, 6144),
    "musicgen-large": (2048, 48, 32, 8192),
}


def real_shape_config(name: str):
    """MusicgenConfig matching the released checkpoint `name` (t5-base text encoder, 32 kHz EnCodec)."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    hidden, layers, heads, ffn = DECODER_SHAPES[name]
    text = T5Config(vocab_size=32128, d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64)
    audio = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        codebook_size=2048,
        num_filters=64,
        upsampling_ratios=[8, 5, 4, 4],
        hidden_size=128,
        num_lstm_layers=2,
        target_bandwidths=[2.2],
        norm_type="weight_norm",
        use_causal_conv=False,
        codebook_dim=128,
        normalize=False,
        pad_mode="reflect",
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        num_codebooks=4,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=ffn,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)


def build_real_shape(name: str, seed: int = 0):
    """A random-weight MusicgenForConditionalGeneration of the real shape, fp32, eval mode.

    Weights are N(0, 0.02) like transformers' init, except that the decoder's weights are scaled so
    the logits have a spread like a trained model's (a sharply peaked softmax would make every
    precision agree trivially; a flat one would make them disagree for no reason)."""
    from transformers import GenerationConfig, MusicgenForConditionalGeneration

    from server.tiny.dims import TINY

    config = real_shape_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**TINY["generation"])
    return model.eval()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer(out: dict, key: str, device: torch.device | None = None):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    try:
        yield
    finally:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        out[key] = time.perf_counter() - started
