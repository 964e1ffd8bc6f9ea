"""The audiocraft side of MAGNeT's conformance. Runs in the oracle's own venv (setup-env.sh), never in
the project's: `python oracle_magnet.py OUT_DIR`.

It builds tiny MAGNeT models (music on T5-base at 32 kHz, sound on T5-large at 16 kHz) with
audiocraft's own builders, saves them in audiocraft's export format, loads them back through
`MAGNeT.get_pretrained(folder)` and records the tokens of `generate` with audiocraft's default
schedule: greedy (use_sampling=False), and sampled (top-p, top-k) with every random draw recorded.

Two things stand in for what cannot run here:
- xformers has no CPU kernel, and MAGNeT runs its attention through xformers: the oracle patches
  `xformers.ops.memory_efficient_attention` with the function it computes,
  softmax(q k^T / sqrt(d) + bias) v.
- torch.multinomial(probs, 1) is the exponential race argmax(probs / q), q ~ Exp(1); the oracle checks
  that on this torch first, then runs it that way with each q saved, so the engine (whose torch
  draws other numbers from the same seed) can be given the same draws.
OUT_DIR/magnet.json lists what was written.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import oracle  # noqa: F401  (sets HF_HOME and the offline flags before transformers loads)
import torch
from omegaconf import OmegaConf
from oracle import OUT, compression_cfg, lm_cfg, randomise, write_t5

SEGMENT_S = 1  # 50 frames at 50 Hz: 16 spans of 3 (48 frames) after audiocraft trims the end
PROMPTS = ["thunderstorm with rain", "calm piano music with soft strings"]


def check_multinomial_is_the_race() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(64, 2048, generator=gen) ** 6
    probs /= probs.sum(-1, keepdim=True)
    torch.manual_seed(99)
    want = torch.multinomial(probs, 1)
    torch.manual_seed(99)
    q = torch.empty_like(probs).exponential_(1)
    assert torch.equal((probs / q).argmax(-1, keepdim=True), want), "torch.multinomial is not the race here"


DRAWS: list[np.ndarray] = []


def recording_multinomial(input, num_samples, replacement=False, *, generator=None):  # noqa: A002
    assert num_samples == 1 and not replacement
    flat = input.reshape(-1, input.shape[-1])
    q = torch.empty_like(flat).exponential_(1, generator=generator)
    DRAWS.append(q.numpy().copy())
    return (flat / q).argmax(dim=-1, keepdim=True).reshape(*input.shape[:-1], -1)


def math_attention(q, k, v, attn_bias=None, p=0.0, **_):
    """xformers.ops.memory_efficient_attention for [B, T, H, D] inputs, without dropout."""
    assert p == 0.0
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    w = torch.einsum("bhtd,bhkd->bhtk", q, k) * q.shape[-1] ** -0.5
    if attn_bias is not None:
        w = w + attn_bias
    return torch.einsum("bhtk,bhkd->bhtd", torch.softmax(w, dim=-1), v).transpose(1, 2)


def magnet_lm_cfg(t5_name: str, sample_rate: int) -> dict:
    cfg = lm_cfg(t5_name, sample_rate, 0.2)
    cfg |= {"lm_model": "transformer_lm_magnet", "solver": "magnet"}
    cfg["dataset"] = {"segment_duration": SEGMENT_S}
    cfg["masking"] = {"span_len": 3}
    cfg["codebooks_pattern"] = {"modeling": "parallel", "parallel": {}}
    cfg["transformer_lm"] |= {"causal": False, "subcodes_context": 5, "memory_efficient": True}
    return cfg


def build_and_export(name: str, t5_name: str, sample_rate: int, ratios: list[int], seed: int):
    from audiocraft.models import builders

    export = OUT / name / "export"
    export.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = magnet_lm_cfg(t5_name, sample_rate)
    build = copy.deepcopy(cfg)  # what audiocraft's loader adds before building
    build["transformer_lm"] |= {"compression_model_framerate": 50, "segment_duration": SEGMENT_S, "span_len": 3}
    lm = builders.get_lm_model(OmegaConf.create(build))
    randomise(lm, seed)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(cfg))},
               export / "state_dict.bin")  # fmt: skip
    ccfg = OmegaConf.create(compression_cfg(sample_rate, ratios))
    codec = builders.get_compression_model(ccfg)
    randomise(codec, seed + 1)
    torch.save({"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(ccfg)},
               export / "compression_state_dict.bin")  # fmt: skip
    return export


# (run name, generation params over MAGNeT's defaults, seed)
RUNS = [
    ("greedy", {"use_sampling": False}, 0),
    ("top_p", {}, 7),  # the defaults: top_p 0.9, temperature 3.0
    ("top_k", {"top_p": 0.0, "top_k": 40, "temperature": 2.0}, 8),
    ("stride1", {"use_sampling": False, "span_arrangement": "stride1"}, 0),
    ("cfg", {"use_sampling": False, "max_cfg_coef": 4.0, "min_cfg_coef": 2.0, "decoding_steps": [6, 3, 2, 2]}, 0),
]


def generate(name: str, export) -> list[dict]:
    from audiocraft.models import MAGNeT

    model = MAGNeT.get_pretrained(str(export), device="cpu")
    tokenizer = model.lm.condition_provider.conditioners["description"].t5_tokenizer
    records = []
    for run, params, seed in RUNS:
        for i, prompt in enumerate(PROMPTS):
            model.set_generation_params(**params)
            DRAWS.clear()
            torch.manual_seed(seed)
            with torch.no_grad():
                wav, tokens = model.generate([prompt], progress=False, return_tokens=True)
            stem = f"{name}/{run}-{i}"
            np.save(OUT / f"{stem}-tokens.npy", tokens[0].cpu().numpy())
            np.save(OUT / f"{stem}-audio.npy", wav[0].cpu().numpy())
            if DRAWS:
                np.save(OUT / f"{stem}-draws.npy", np.stack(DRAWS))
            records.append({
                "run": run, "prompt": prompt, "seed": seed, "params": params,
                "tokens": f"{stem}-tokens.npy", "audio": f"{stem}-audio.npy",
                "draws": f"{stem}-draws.npy" if DRAWS else None,
                "input_ids": tokenizer([prompt])["input_ids"][0],
                "defaults": {k: v for k, v in model.generation_params.items()},
            })  # fmt: skip
    return records


def main() -> None:
    import audiocraft
    from audiocraft.utils import utils
    from xformers import ops

    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    check_multinomial_is_the_race()
    utils.multinomial = recording_multinomial
    ops.memory_efficient_attention = math_attention
    t5 = {n: write_t5(n, seed) for n, seed in (("t5-base", 11), ("t5-large", 12))}
    models = {"magnet": ("t5-base", 32000, [8, 5, 4, 4], 303), "audio-magnet": ("t5-large", 16000, [8, 5, 4, 2], 404)}
    results = {"audiocraft": audiocraft.__version__, "torch": torch.__version__, "segment_s": SEGMENT_S, "models": {}}
    for name, (t5_name, rate, ratios, seed) in models.items():
        export = build_and_export(name, t5_name, rate, ratios, seed)
        results["models"][name] = {"export": str(export), "t5": str(t5[t5_name]), "runs": generate(name, export)}
    (OUT / "magnet.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
