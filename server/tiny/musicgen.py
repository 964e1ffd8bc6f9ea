"""Tiny MusicGen and MusicGen-Melody models (kinds "musicgen", "musicgen-melody"), mono and stereo.

Real structure (T5 text encoder, 32 kHz EnCodec at 50 Hz with 4 codebooks of 2048, the
delay-pattern decoder) with the TINY dims and random weights. Stereo models keep a mono EnCodec:
transformers encodes and decodes stereo as two mono passes over the even (left) and odd (right)
codebooks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lib.catalogue import ModelSpec
from server.tiny.dims import TINY, check_supported, model_seed
from server.tiny.tokenizer import build_tokenizer
from server.tiny.weight_norm import legacy_weight_norm_names


def tiny_config(spec: ModelSpec, text_vocab_size: int):
    """MusicgenConfig / MusicgenMelodyConfig with the real structure and the TINY dims."""
    from transformers import EncodecConfig, T5Config

    check_supported(spec)
    text = T5Config(vocab_size=text_vocab_size, **TINY["text_encoder"])
    audio = EncodecConfig(**copy.deepcopy(TINY["audio_encoder"]))
    decoder_kw = dict(TINY["decoder"], num_codebooks=spec.codebooks, audio_channels=spec.channels)
    if spec.kind == "musicgen":
        from transformers import MusicgenConfig, MusicgenDecoderConfig

        return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=MusicgenDecoderConfig(**decoder_kw))
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    return MusicgenMelodyConfig(
        text_encoder=text,
        audio_encoder=audio,
        decoder=MusicgenMelodyDecoderConfig(**decoder_kw),
        **TINY["melody"],
    )


def build_tiny_model(spec: ModelSpec, seed: int = 0, text_vocab_size: int | None = None):
    """The tiny random-weight model for a catalogue entry, in fp32 and eval mode.

    The global torch RNG is left as it was.
    """
    import torch
    from transformers import GenerationConfig

    if text_vocab_size is None:
        text_vocab_size = len(build_tokenizer())
    config = tiny_config(spec, text_vocab_size)
    if spec.kind == "musicgen":
        from transformers import MusicgenForConditionalGeneration as cls
    else:
        from transformers import MusicgenMelodyForConditionalGeneration as cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(spec.name, seed))
        model = cls(config)
    model.generation_config = GenerationConfig(**TINY["generation"])
    return model.eval()


def _preprocessor_config(spec: ModelSpec) -> dict[str, Any]:
    """preprocessor_config.json as the released repos have it (the legacy single-file layout).

    The melody feature extractor needs torchaudio even to be constructed, and torchaudio does not
    load with this project's torch, so its dict is written out by hand with the class defaults.
    """
    if spec.kind == "musicgen":
        from transformers import EncodecFeatureExtractor

        # As transformers' conversion script: padding on the left, one feature per audio channel.
        fe = EncodecFeatureExtractor(feature_size=spec.channels, sampling_rate=32000, padding_side="left")
        return {**fe.to_dict(), "processor_class": "MusicgenProcessor"}
    return {
        "chunk_length": 30,
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
        "feature_size": TINY["melody"]["num_chroma"],
        "hop_length": 4096,
        "n_fft": 16384,
        "num_chroma": TINY["melody"]["num_chroma"],
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "MusicgenMelodyProcessor",
        "return_attention_mask": False,
        "sampling_rate": 32000,
        "stem_indices": [3, 2],
    }


def save_files(spec: ModelSpec, out: Path, seed: int) -> None:
    """The repo's files as the released ones: config, weights, tokenizer, preprocessor config."""
    tokenizer = build_tokenizer()
    model = build_tiny_model(spec, seed=seed, text_vocab_size=len(tokenizer))
    model.save_pretrained(out)
    legacy_weight_norm_names(out / "model.safetensors")
    tokenizer.save_pretrained(out)
    pre = json.dumps(_preprocessor_config(spec), indent=2, sort_keys=True) + "\n"
    (out / "preprocessor_config.json").write_text(pre)
