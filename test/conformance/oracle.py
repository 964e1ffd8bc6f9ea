"""The audiocraft side of the conformance suite. Runs in the oracle's own venv (setup-env.sh), never
in the project's: `python oracle.py OUT_DIR`.

It builds tiny MusicGen and AudioGen models with audiocraft's own builders (a T5 conditioner over a
tiny T5 placed in an offline HF cache, the delay pattern, SEANet + RVQ compression models), saves them
in audiocraft's export format, loads them back through `MusicGen/AudioGen.get_pretrained(folder)`, and
records greedy tokens and decoded audio. OUT_DIR/results.json lists what was written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OUT = Path(sys.argv[1]).resolve()
# Before transformers / huggingface_hub are imported: the T5 conditioner loads "t5-base" by name.
os.environ["HF_HOME"] = str(OUT / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

PROMPTS = ["thunderstorm with rain", "a dog barking in the distance"]
DURATION_S = 2.0
CFG_COEF = 3.0
T5_WIDTH = {"t5-base": 768, "t5-large": 1024}
SENTENCES = [
    "thunderstorm with rain and wind",
    "a dog barking in the distance while cars pass by",
    "calm piano music with soft strings at ninety bpm",
    "upbeat electronic dance track with punchy drums and a groovy bassline",
    "footsteps on gravel, a door creaking open, birds singing in the morning",
    "the quick brown fox jumps over the lazy dog",
]


def write_t5(name: str, seed: int) -> Path:
    """A tiny T5 of the width audiocraft expects for `name`, as a hub-cache snapshot."""
    import sentencepiece as spm
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer, T5TokenizerFast

    rev = "0" * 39 + str(seed % 10)
    repo = OUT / "hf" / "hub" / f"models--{name}"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    corpus = OUT / "t5-corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(snapshot / "spiece"),
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    slow = T5Tokenizer(str(snapshot / "spiece.model"), legacy=True)
    slow.save_pretrained(snapshot)
    # tokenizer.json too, so the project's transformers loads the same vocabulary without sentencepiece.
    T5TokenizerFast.from_pretrained(snapshot, legacy=True).save_pretrained(snapshot)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(slow), d_model=T5_WIDTH[name], d_ff=64, num_layers=2, num_heads=4, d_kv=8)
    T5ForConditionalGeneration(config).save_pretrained(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snapshot


def lm_cfg(t5_name: str, sample_rate: int, cfg_dropout: float) -> dict:
    """An xp.cfg as audiocraft's LM solvers write it (musicgen_lm / audiogen_lm), with tiny widths."""
    return {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": sample_rate,
        "channels": 1,
        "lm_model": "transformer_lm",
        "dataset": {"segment_duration": 10 if t5_name == "t5-large" else 30},
        "classifier_free_guidance": {"training_dropout": cfg_dropout, "inference_coef": CFG_COEF},
        "attribute_dropout": {},
        "codebooks_pattern": {
            "modeling": "delay",
            "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0},
        },
        "transformer_lm": {
            "dim": 64, "num_heads": 4, "num_layers": 2, "hidden_scale": 4, "n_q": 4, "card": 2048,
            "dropout": 0.0, "emb_lr": None, "activation": "gelu", "norm_first": True, "bias_ff": False,
            "bias_attn": False, "bias_proj": False, "past_context": None, "causal": True, "custom": False,
            "memory_efficient": True, "attention_as_float32": False, "layer_scale": None,
            "positional_embedding": "sin", "xpos": False, "checkpointing": "none", "weight_init": "gaussian",
            "depthwise_init": "current", "zero_bias_init": True, "norm": "layer_norm", "cross_attention": False,
            "qk_layer_norm": False, "qk_layer_norm_cross": False, "attention_dropout": None, "kv_repeat": 1,
            "two_step_cfg": False,
        },
        "fuser": {
            "cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [], "prepend": [],
            "cross": ["description"], "input_interpolate": [],
        },
        "conditioners": {
            "description": {
                "model": "t5",
                "t5": {"name": t5_name, "finetune": False, "word_dropout": 0.0, "normalize_text": False},
            }
        },
    }  # fmt: skip


def compression_cfg(sample_rate: int, ratios: list[int]) -> dict:
    """config/model/encodec/default.yaml with tiny widths (references left as OmegaConf writes them)."""
    return {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": sample_rate,
        "channels": 1,
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet", "quantizer": "rvq", "sample_rate": "${sample_rate}",
            "channels": "${channels}", "causal": False, "renormalize": False,
        },
        "seanet": {
            "dimension": 32, "channels": "${channels}", "causal": "${encodec.causal}", "n_filters": 4,
            "n_residual_layers": 1, "ratios": ratios, "activation": "ELU", "activation_params": {"alpha": 1.0},
            "norm": "weight_norm", "norm_params": {}, "kernel_size": 7, "residual_kernel_size": 3,
            "last_kernel_size": 7, "dilation_base": 2, "pad_mode": "constant", "true_skip": True, "compress": 2,
            "lstm": 2, "disable_norm_outer_blocks": 0,
            "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
            "encoder": {},
        },
        "rvq": {
            "n_q": 4, "q_dropout": False, "bins": 2048, "decay": 0.99, "kmeans_init": True, "kmeans_iters": 50,
            "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False,
        },
    }  # fmt: skip


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Make every tensor informative: layer norms away from (1, 0), RVQ codebooks drawn (with
    kmeans_init they start at zero until training), so a swapped or dropped tensor changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.state_dict(keep_vars=True).items()):
            if name.endswith("_codebook.embed"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            elif name.endswith("_codebook.inited"):
                tensor.fill_(1.0)
            elif name.endswith(("embed_avg", "cluster_size")):
                tensor.copy_(torch.rand(tensor.shape, generator=gen))
            elif ".norm" in name or name.startswith("out_norm") or "output_proj.bias" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                tensor.copy_(base + 0.2 * torch.randn(tensor.shape, generator=gen))


def build_and_export(name: str, t5_name: str, sample_rate: int, ratios: list[int], seed: int) -> Path:
    from audiocraft.models import builders

    export = OUT / name / "export"
    export.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = OmegaConf.create(lm_cfg(t5_name, sample_rate, 0.1 if t5_name == "t5-large" else 0.3))
    lm = builders.get_lm_model(cfg)
    randomise(lm, seed)
    state = lm.state_dict()
    assert not any(".t5." in k for k in state), "the frozen T5 must not be in the export"
    torch.save({"best_state": state, "xp.cfg": OmegaConf.to_yaml(cfg)}, export / "state_dict.bin")
    ccfg = OmegaConf.create(compression_cfg(sample_rate, ratios))
    codec = builders.get_compression_model(ccfg)
    randomise(codec, seed + 1)
    codec_pkg = {"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(ccfg)}
    torch.save(codec_pkg, export / "compression_state_dict.bin")
    return export


def generate(name: str, cls, export: Path) -> list[dict]:
    """Greedy tokens and audio through the package's own loading and generation path."""
    model = cls.get_pretrained(str(export), device="cpu")
    model.set_generation_params(use_sampling=False, duration=DURATION_S, cfg_coef=CFG_COEF)
    tokenizer = model.lm.condition_provider.conditioners["description"].t5_tokenizer
    records = []
    for i, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            wav, tokens = model.generate([prompt], progress=False, return_tokens=True)
        np.save(OUT / name / f"tokens-{i}.npy", tokens[0].cpu().numpy())
        np.save(OUT / name / f"audio-{i}.npy", wav[0].cpu().numpy())
        records.append(
            {
                "prompt": prompt,
                "tokens": f"{name}/tokens-{i}.npy",
                "audio": f"{name}/audio-{i}.npy",
                "input_ids": tokenizer([prompt])["input_ids"][0],
            }
        )
    return records


def main() -> None:
    import audiocraft
    from audiocraft.models import AudioGen, MusicGen

    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t5 = {n: write_t5(n, seed) for n, seed in (("t5-base", 11), ("t5-large", 12))}
    models = {
        "musicgen": ("t5-base", 32000, [8, 5, 4, 4], MusicGen, 101),
        "audiogen": ("t5-large", 16000, [8, 5, 4, 2], AudioGen, 202),
    }
    results = {"audiocraft": audiocraft.__version__, "torch": torch.__version__, "duration_s": DURATION_S,
               "cfg_coef": CFG_COEF, "models": {}}  # fmt: skip
    for name, (t5_name, rate, ratios, cls, seed) in models.items():
        export = build_and_export(name, t5_name, rate, ratios, seed)
        results["models"][name] = {
            "export": str(export),
            "t5": str(t5[t5_name]),
            "sample_rate": rate,
            "frame_rate": rate / int(np.prod(ratios)),
            "runs": generate(name, cls, export),
        }
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
