"""The tiny T5 text-encoder repo AudioGen needs beside its own (google-t5/t5-large)."""

from __future__ import annotations

from pathlib import Path

from server.tiny.dims import TINY
from server.tiny.tokenizer import build_tokenizer


def save_files(out: Path, seed: int) -> None:
    """A tiny T5 text-encoder repo, as google-t5/t5-large holds it (the full encoder-decoder model and
    its tokenizer); AudioGen uses its encoder."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), **TINY["text_encoder"]))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
