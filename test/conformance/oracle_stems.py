"""The audiocraft side of the melody-stems conformance test. Runs in the oracle's own venv
(setup-env.sh), never in the project's: `python oracle_stems.py OUT_DIR MODEL_DIR`.

MODEL_DIR holds the project's tiny htdemucs in both published layouts: hub/ (htdemucs.yaml and
<sig>.safetensors, demucs 4.1's hub export) and legacy/ (htdemucs.yaml and <sig>-<sha>.th, demucs'
own repo layout). Both are loaded by demucs' own code (demucs.hf.load_safetensors_model, and
demucs.pretrained.get_model(name, repo=...)); AudioCraft's ChromaStemConditioner then runs on the
legacy-loaded bag (its `pretrained.get_model('htdemucs')` is pointed at it: there is no network).
OUT_DIR/melody.npy (mono float32 at 32 kHz) is the input; OUT_DIR/stems.json lists what was written.

Then a tiny MusicGen-Melody is built with audiocraft's builders (a ChromaStemConditioner over that
htdemucs and a T5 conditioner, both prepended, as AudioCraft's melody models are), saved in
audiocraft's export format, loaded back with `MusicGen.get_pretrained(folder)` and run greedily with
`generate_with_chroma` on the same melody and shift seed: its tokens are the reference.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

OUT = Path(sys.argv[1]).resolve()
MODEL_DIR = Path(sys.argv[2]).resolve()
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

# oracle.py's helpers (the tiny T5, the xp.cfg); importing it first points HF_HOME at OUT_DIR/hf
# before transformers is imported, as its own run does.
import numpy as np  # noqa: E402
import oracle  # noqa: E402, F401
import torch  # noqa: E402

SAMPLE_RATE = 32000
SHIFT_SEED = 1234


def main() -> None:
    import demucs
    from demucs import pretrained
    from demucs.apply import BagOfModels, apply_model
    from demucs.audio import convert_audio
    from demucs.hf import load_safetensors_model

    torch.set_num_threads(1)
    legacy = pretrained.get_model("htdemucs", repo=MODEL_DIR / "legacy")
    assert isinstance(legacy, BagOfModels) and len(legacy.models) == 1
    hub_models = [load_safetensors_model(p) for p in sorted((MODEL_DIR / "hub").glob("*.safetensors"))]
    hub_state, legacy_state = hub_models[0].state_dict(), legacy.models[0].state_dict()
    layouts_agree = hub_state.keys() == legacy_state.keys() and all(
        torch.equal(hub_state[k], legacy_state[k]) for k in hub_state
    )

    from audiocraft.modules.conditioners import ChromaStemConditioner

    pretrained.get_model = lambda name, repo=None: legacy  # the conditioner asks for 'htdemucs' by name
    cond = ChromaStemConditioner(
        output_dim=16, sample_rate=SAMPLE_RATE, n_chroma=12, radix2_exp=14, duration=30.0,
        match_len_on_eval=True, device="cpu", argmax=True,
    )  # fmt: skip
    melody = torch.from_numpy(np.load(OUT / "melody.npy")).float()
    wav = melody[None, None]  # [batch, channels, samples]

    # The separation alone, as apply_model runs it by default (one shift, drawn from `random`).
    random.seed(SHIFT_SEED)
    at_rate = convert_audio(wav, SAMPLE_RATE, legacy.samplerate, legacy.audio_channels)
    with torch.no_grad():
        stems = apply_model(legacy, at_rate, device="cpu")
    random.seed(SHIFT_SEED)
    stem_mix = cond._get_stemmed_wav(wav, SAMPLE_RATE)
    random.seed(SHIFT_SEED)
    with torch.no_grad():
        stem_chroma = cond._compute_wav_embedding(wav, SAMPLE_RATE)
    with torch.no_grad():
        full_chroma = cond._extract_chroma(wav)
    np.save(OUT / "stems.npy", stems[0].numpy())
    np.save(OUT / "stem_mix.npy", stem_mix[0, 0].numpy())
    np.save(OUT / "stem_chroma.npy", stem_chroma[0].numpy())
    np.save(OUT / "full_chroma.npy", full_chroma[0].numpy())
    results = {
        "demucs": demucs.__version__,
        "torch": torch.__version__,
        "sources": list(legacy.sources),
        "stem_indices": cond.stem_indices.tolist(),
        "chroma_len": cond.chroma_len,
        "shift_seed": SHIFT_SEED,
        "layouts_agree": bool(layouts_agree),
        "segment": float(legacy.models[0].segment),
    }
    results["melody_model"] = melody_model(melody)
    (OUT / "stems.json").write_text(json.dumps(results, indent=1))


PROMPT = "calm piano music with soft strings"
DURATION_S = 2.0
CFG_COEF = 3.0


def melody_cfg() -> dict:
    """oracle.py's tiny MusicGen xp.cfg, as audiocraft's chroma2music conditioner config makes it a
    melody model: the chroma and the text both prepended, nothing cross-attended."""
    from oracle import lm_cfg

    cfg = lm_cfg("t5-base", SAMPLE_RATE, 0.3)
    cfg["fuser"].update(prepend=["self_wav", "description"], cross=[])
    cfg["conditioners"]["self_wav"] = {
        "model": "chroma_stem",
        "chroma_stem": {
            "sample_rate": SAMPLE_RATE, "n_chroma": 12, "radix2_exp": 14, "argmax": True,
            "match_len_on_eval": True, "eval_wavs": None, "n_eval_wavs": 0, "cache_path": None,
        },
    }  # fmt: skip
    return cfg


def melody_model(melody: torch.Tensor) -> dict:
    from audiocraft.models import MusicGen, builders
    from omegaconf import OmegaConf
    from oracle import compression_cfg, randomise, write_t5

    t5 = write_t5("t5-base", 11)
    export = OUT / "musicgen-melody" / "export"
    export.mkdir(parents=True, exist_ok=True)
    seed = 303
    torch.manual_seed(seed)
    cfg = OmegaConf.create(melody_cfg())
    lm = builders.get_lm_model(cfg)
    randomise(lm, seed)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": OmegaConf.to_yaml(cfg)}, export / "state_dict.bin")
    ccfg = OmegaConf.create(compression_cfg(SAMPLE_RATE, [8, 5, 4, 4]))
    codec = builders.get_compression_model(ccfg)
    randomise(codec, seed + 1)
    codec_pkg = {"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(ccfg)}
    torch.save(codec_pkg, export / "compression_state_dict.bin")

    model = MusicGen.get_pretrained(str(export), device="cpu")
    model.set_generation_params(use_sampling=False, duration=DURATION_S, cfg_coef=CFG_COEF)
    random.seed(SHIFT_SEED)
    with torch.no_grad():
        _, tokens = model.generate_with_chroma(
            [PROMPT], melody[None, None], SAMPLE_RATE, progress=False, return_tokens=True
        )  # fmt: skip
    np.save(OUT / "musicgen-melody" / "tokens.npy", tokens[0].numpy())
    tokenizer = model.lm.condition_provider.conditioners["description"].t5_tokenizer
    return {
        "export": str(export),
        "t5": str(t5),
        "prompt": PROMPT,
        "duration_s": DURATION_S,
        "cfg_coef": CFG_COEF,
        "tokens": "musicgen-melody/tokens.npy",
        "input_ids": tokenizer([PROMPT])["input_ids"][0],
    }


if __name__ == "__main__":
    main()
