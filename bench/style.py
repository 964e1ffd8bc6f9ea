"""MusicGen-Style's cost on this machine, at the real shapes with random weights: the style conditioner
for a 3 s excerpt (MERT-v1-95M's shape: 7 convolutions of 512, 12 layers of 768 with 12 heads and an
ffn of 3072; the conditioner's default scale: 8 layers of 512, 6 codebooks of 1024), and 5 s of music
from musicgen-medium's decoder shape (48 layers of 1536) with that style prefix, against the same
model's text-only generation in the same run (the reference; the ratio is the number to read on a
loaded machine).

--steps N (default) times N decoder steps of each generation and scales them to the whole (a step's cost
barely grows with its position at this length); --full runs both whole. --shape tiny runs the tiny
widths instead: a smoke test of the script, not a figure. The 1-minute load average is recorded
before and after: above the core count, other processes competed and every time is slower than the
machine can do.

    .venv/bin/python -m bench.style [--full] [--precision float32] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

PROMPT = "lofi hip hop with warm piano chords"
SECONDS = 5.0
EXCERPT_S = 3.0
SAMPLE_RATE = 32000

# (decoder hidden, layers, heads, ffn), MERT kwargs, style scale (dim, heads, layers), bins
SHAPES = {
    "real": ((1536, 48, 24, 6144), {}, (512, 8, 8), 1024),
    "tiny": (
        (32, 2, 4, 64),
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4},
        (256, 8, 4), 64,
    ),
}  # fmt: skip


def build(shape: str, precision: str):
    """A StyleLM of the shape: the MusicgenMelody class (the style tokens and text prepended) with
    T5-base and 32 kHz EnCodec (bench/common.py's), the style conditioner and MERT, random weights."""
    import dataclasses

    import torch
    from transformers import HubertConfig, HubertModel, MusicgenMelodyConfig, MusicgenMelodyDecoderConfig
    from transformers import MusicgenMelodyForConditionalGeneration as Melody

    from bench.common import real_shape_config
    from lib.catalogue import get_spec
    from server.engine.style import StyleConditioner, StyleSettings
    from server.models.device import pick_precision
    from server.models.musicgen import audiocraft_positions, prepare
    from server.models.style import StyleLM
    from server.tiny.tokenizer import build_tokenizer

    (hidden, layers, heads, ffn), mert_kwargs, (dim, s_heads, s_layers), bins = SHAPES[shape]
    base = real_shape_config("musicgen-medium")
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=2048, num_codebooks=4, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        ffn_dim=ffn, max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048,
    )  # fmt: skip
    config = MusicgenMelodyConfig(
        text_encoder=base.text_encoder, audio_encoder=base.audio_encoder, decoder=decoder, num_chroma=dim,
        chroma_length=23,
    )  # fmt: skip
    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Melody(config).eval()
        mert = HubertModel(HubertConfig(feat_proj_layer_norm=True, conv_bias=False, **mert_kwargs)).eval()
        settings = StyleSettings(
            dim=dim, num_heads=s_heads, num_layers=s_layers, n_q_out=6, eval_q=3, bins=bins, ds_factor=15,
            excerpt_s=EXCERPT_S, middle=True, batch_norm=True, sample_rate=SAMPLE_RATE,
            mert_width=mert.config.hidden_size,
        )  # fmt: skip
        style = StyleConditioner(settings)
        with torch.no_grad():
            for name, p in style.named_parameters():
                if name.endswith("in_proj_weight"):
                    torch.nn.init.xavier_uniform_(p)
            style.codebooks.normal_()
    embed = model.decoder.model.decoder.embed_positions
    embed.weights = audiocraft_positions(embed.weights.shape[0], embed.weights.shape[1])
    style.mert = mert
    spec = get_spec("musicgen-style")
    lm = prepare(model, spec, build_tokenizer(), device, pick_precision(precision, device), Path("/dev/null"))
    shared = {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm) if f.init and not f.name.startswith("_")}
    return StyleLM(**shared, style=style.eval())


def style_audio() -> np.ndarray:
    t = np.arange(round(4.0 * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.shape)).astype(
        np.float32
    )


def generate(lm, style: np.ndarray | None, steps: int | None) -> dict:
    from server.engine.decode import DecodeBatch
    from server.engine.text_to_audio import AudioRequest, LongForm

    out: dict = {}
    started = time.perf_counter()
    plan = LongForm(lm, AudioRequest(prompt=PROMPT, duration_s=SECONDS, seed=0, style=style), stride_s=18.0)
    out["condition_s"] = time.perf_counter() - started  # the style conditioner (nothing without style audio)
    batch = DecodeBatch(lm)
    started = time.perf_counter()
    handle = batch.add(plan.request())  # the prefix's prefill and the first step
    out["prefill_s"] = time.perf_counter() - started
    total = batch.progress(handle)[1]
    timed = total - 1 if steps is None else min(total - 1, steps)
    started = time.perf_counter()
    for _ in range(timed):
        batch.step()
    took = time.perf_counter() - started
    out |= {"steps": total, "step_s": took / timed, "extrapolated": timed < total - 1}
    out["generate_s"] = out["condition_s"] + out["prefill_s"] + out["step_s"] * (total - 1)
    return out


def time_conditioner(lm, repeats: int = 3) -> dict:
    """The style condition of one 3 s excerpt (MERT and the conditioner), best of `repeats`."""
    import torch

    from server.engine.style import MERT_SAMPLE_RATE, condition

    wav = style_audio()
    best = best_mert = float("inf")
    piece = torch.zeros(1, round(EXCERPT_S * MERT_SAMPLE_RATE))
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.inference_mode():
            lm.style.features(piece)
        best_mert = min(best_mert, time.perf_counter() - started)
        started = time.perf_counter()
        cond = condition(lm.style, lm.model.audio_enc_to_dec_proj, wav, EXCERPT_S, 3, 0)
        best = min(best, time.perf_counter() - started)
    return {"mert_s": best_mert, "conditioner_s": best, "tokens": int(cond.states.shape[0])}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="real")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=20, help="decoder steps timed per generation")
    parser.add_argument("--full", action="store_true", help="run both generations whole")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    lm = build(args.shape, args.precision)
    steps = None if args.full else max(2, args.steps)
    cond = time_conditioner(lm)
    styled = generate(lm, style_audio(), steps)
    text = generate(lm, None, steps)
    load = (load_before, os.getloadavg()[0])
    result = {"shape": args.shape, "precision": lm.precision, "threads": args.threads, "seconds": SECONDS,
              "excerpt_s": EXCERPT_S, "conditioner": cond, "style": styled, "text_only": text,
              "load": load}  # fmt: skip
    print(
        f"{args.shape} {lm.precision}: style conditioner {cond['conditioner_s']:.3f} s for a {EXCERPT_S:g} s excerpt"
        f" (MERT {cond['mert_s']:.3f} s, {cond['tokens']} tokens);"
        f" {SECONDS:g} s with style {styled['generate_s']:.1f} s ({1000 * styled['step_s']:.0f} ms/step),"
        f" text only {text['generate_s']:.1f} s ({1000 * text['step_s']:.0f} ms/step),"
        f" style/text {styled['generate_s'] / text['generate_s']:.3f}x"
        f"  load {min(load):.1f}-{max(load):.1f}{'  (extrapolated)' if steps else ''}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
