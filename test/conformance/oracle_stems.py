"""The audiocraft side of the melody-stems conformance test. Runs in the oracle's own venv
(setup-env.sh), never in the project's: `python oracle_stems.py OUT_DIR MODEL_DIR`.

MODEL_DIR holds the project's tiny htdemucs in both published layouts: hub/ (htdemucs.yaml and
<sig>.safetensors, demucs 4.1's hub export) and legacy/ (htdemucs.yaml and <sig>-<sha>.th, demucs'
own repo layout). Both are loaded by demucs' own code (demucs.hf.load_safetensors_model, and
demucs.pretrained.get_model(name, repo=...)); AudioCraft's ChromaStemConditioner then runs on the
legacy-loaded bag (its `pretrained.get_model('htdemucs')` is pointed at it: there is no network).
OUT_DIR/melody.npy (mono float32 at 32 kHz) is the input; OUT_DIR/stems.json lists what was written.
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

import numpy as np  # noqa: E402
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
    (OUT / "stems.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
