"""The audiocraft side of MusicGen-Style's conformance. Runs in the oracle's own venv (setup-env.sh),
never in the project's: `python oracle_style.py OUT_DIR`.

audiocraft 1.3.0 (the newest on PyPI) predates MusicGen-Style: it has no StyleConditioner and its
builders do not know `model: style`. So the style conditioner's inference path is assembled here from
1.3.0's own parts, as the upstream StyleConditioner wires them (conditioners.py, FeatureExtractor with
model_name mert): the excerpt from the middle of the audio (use_middle_of_segment), audiocraft's
convert_audio to 24 kHz mono, MERT's last hidden state, a Linear, 1.3.0's StreamingTransformer (the
xsmall scale's arguments), BatchNorm1d(affine=False), 1.3.0's ResidualVectorQuantizer with eval_q
codebooks, every ds_factor-th frame, output_proj and the length mask. It is a WaveformConditioner
named self_wav inside the LMModel that 1.3.0's builders make for the style2music fuser
(prepend [self_wav, description]), so tokenizing, collating, the classifier-free-guidance null
condition, the prepending and the generation loop are all 1.3.0's own. MERT is transformers' HubertModel
(4.49 here) with a tiny MERTConfig-shaped config: MERT's own modeling code is HuggingFace remote
code and not in any package. Double classifier-free guidance (cfg_coef_beta), newer than 1.3.0 as well,
is upstream's put into 1.3.0's generate (double_guidance below).

It writes the export (state_dict.bin with the style2music xp.cfg, compression_state_dict.bin), a tiny
MERT repo in MERT-v1-95M's layout (pytorch_model.bin with the old weight-norm names), the style audio,
and for each run the style tokens, their codes and the greedy tokens. OUT_DIR/style.json lists them.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import oracle  # noqa: F401  (sets HF_HOME and the offline flags before transformers loads)
import torch
from omegaconf import OmegaConf
from oracle import OUT, compression_cfg, lm_cfg, randomise, write_t5
from torch import nn

SAMPLE_RATE = 32000
DURATION_S = 1.0
CFG_COEF = 3.0
STYLE = {  # config/conditioner/style2music.yaml, xsmall transformer and 64 bins
    "model_name": "mert", "transformer_scale": "xsmall", "sample_rate": "${sample_rate}",
    "encodec_checkpoint": "//pretrained/facebook/encodec_32khz", "encodec_n_q": 3, "length": 3.0,
    "ds_factor": 15, "n_q_out": 6, "eval_q": 3, "q_dropout": True, "bins": 64, "varying_lengths": [1.5, 4.5],
    "batch_norm": True, "compute_mask": True, "num_codebooks_lm": "${transformer_lm.n_q}",
    "ds_rate_compression": 640, "use_middle_of_segment": True, "rvq_threshold_ema_dead_code": 0.1,
}  # fmt: skip
XSMALL = {"d_model": 256, "num_heads": 8, "num_layers": 4}
MERT = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
    "conv_dim": [16] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "mask_time_prob": 0.05,
}  # fmt: skip
# (prompt, style audio or None, excerpt_length, eval_q, cfg_coef_beta)
RUNS = [
    ("calm piano music with soft strings", "style", 3.0, 3, None),
    (None, "style", 3.0, 3, None),
    ("upbeat electronic dance track", "style", 1.5, 1, None),
    ("upbeat electronic dance track", "style", 4.5, 6, None),
    ("calm piano music with soft strings", None, 3.0, 3, None),
    ("calm piano music with soft strings", "style", 3.0, 3, 5.0),
    ("upbeat electronic dance track", "style", 2.0, 2, 1.0),
]


def write_mert(seed: int):
    """A tiny MERT: HubertModel, saved as MERT-v1-95M's repo holds it."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**MERT)).eval()
    folder = OUT / "mert"
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.replace(".parametrizations.weight.original0", ".weight_g")
        name = name.replace(".parametrizations.weight.original1", ".weight_v")
        state[name] = tensor.clone()
    torch.save(state, folder / "pytorch_model.bin")
    config = model.config.to_dict()
    config |= {"model_type": "mert_model", "architectures": ["MERTModel"], "attention_relax": -1.0,
               "deepnorm": False, "feature_extractor_cqt": False, "feature_extractor_cqt_bins": 336,
               "sample_rate": 24000}  # fmt: skip
    config.pop("transformers_version", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return model, folder


def style_conditioner(mert, output_dim: int):
    from audiocraft.data.audio_utils import convert_audio
    from audiocraft.modules.conditioners import WaveformConditioner
    from audiocraft.modules.transformer import StreamingTransformer
    from audiocraft.quantization import ResidualVectorQuantizer
    from audiocraft.utils.utils import length_to_mask

    class Style(WaveformConditioner):
        """StyleConditioner's eval path (upstream conditioners.py) from 1.3.0's modules."""

        def __init__(self):
            dim = XSMALL["d_model"]
            super().__init__(dim=dim, output_dim=output_dim, device="cpu")
            self.__dict__["feat_extractor"] = mert  # not a submodule: not in the export, as upstream
            self.embed = nn.Linear(mert.config.hidden_size, dim)
            self.transformer = StreamingTransformer(
                dim_feedforward=4 * dim, memory_efficient=True, activation="gelu", norm_first=True, causal=False,
                layer_scale=None, bias_ff=False, bias_attn=False, **XSMALL,
            )  # fmt: skip
            self.rvq = ResidualVectorQuantizer(
                dim, n_q=STYLE["n_q_out"], q_dropout=True, bins=STYLE["bins"], threshold_ema_dead_code=0.1
            )
            self.batch_norm = nn.BatchNorm1d(dim, affine=False)
            self.set_params(STYLE["eval_q"], STYLE["length"])
            self.codes = None

        def set_params(self, eval_q: int, excerpt_length: float) -> None:
            self.eval_q, self.length_subwav = eval_q, int(excerpt_length * SAMPLE_RATE)

        def _downsampling_factor(self):
            return SAMPLE_RATE / 75 * STYLE["ds_factor"]

        def _get_wav_embedding(self, x):
            if x.wav.shape[-1] == 1:
                z = torch.zeros(x.wav.shape[0], 1, self.dim)
            else:
                start = int((x.wav.shape[-1] - self.length_subwav) / 2)
                wav = x.wav[:, :, start : start + self.length_subwav]
                wav = convert_audio(wav, from_rate=x.sample_rate[0], to_rate=24000, to_channels=1)
                z = self.embed(self.feat_extractor(wav.squeeze(-2)).last_hidden_state)
            out = self.transformer(z)
            out = self.batch_norm(out.transpose(1, 2)).transpose(1, 2)
            self.rvq.set_num_codebooks(self.eval_q)
            q = self.rvq(out.transpose(1, 2), frame_rate=1.0)
            self.codes = q.codes[:, :, :: STYLE["ds_factor"]]
            return q.x.transpose(1, 2)[:, :: STYLE["ds_factor"]]

        def forward(self, x):
            with torch.no_grad():
                embeds = self.output_proj(self._get_wav_embedding(x))
            lengths = x.length / self._downsampling_factor()
            mask = length_to_mask(lengths, max_len=embeds.shape[1]).int()
            embeds = embeds * mask.unsqueeze(2)
            self.embeds = embeds
            return embeds, mask

    return Style()


def build(seed: int):
    from audiocraft.models import builders

    cfg = lm_cfg("t5-base", SAMPLE_RATE, 0.1)
    cfg["fuser"] |= {"prepend": ["self_wav", "description"], "cross": []}
    build_cfg = OmegaConf.create(copy.deepcopy(cfg))  # 1.3.0's builders make the LM and the T5 conditioner
    torch.manual_seed(seed)
    lm = builders.get_lm_model(build_cfg)
    mert, mert_dir = write_mert(seed + 5)
    lm.condition_provider.conditioners["self_wav"] = style_conditioner(mert, cfg["transformer_lm"]["dim"])
    randomise(lm, seed)
    gen = torch.Generator().manual_seed(seed + 7)
    bn = lm.condition_provider.conditioners["self_wav"].batch_norm
    bn.running_mean.copy_(0.1 * torch.randn(bn.running_mean.shape, generator=gen))
    bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))
    lm.eval()
    # The export's xp.cfg is the style model's: its conditioner as style2music has it.
    cfg["conditioners"]["self_wav"] = {"model": "style", "style": STYLE}
    export = OUT / "export"
    export.mkdir(parents=True, exist_ok=True)
    state = lm.state_dict()
    assert not any("feat_extractor" in k for k in state)
    torch.save({"best_state": state, "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(cfg))}, export / "state_dict.bin")
    ccfg = OmegaConf.create(compression_cfg(SAMPLE_RATE, [8, 5, 4, 4]))
    codec = builders.get_compression_model(ccfg)
    randomise(codec, seed + 1)
    torch.save(
        {"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(ccfg)}, export / "compression_state_dict.bin"
    )
    return lm, export, mert_dir


def double_guidance(lm, beta: float):
    """Upstream's double classifier-free guidance (models/lm.py, cfg_coef_beta), which 1.3.0's
    generate() lacks, put into it: the conditions with the text dropped (upstream's
    _drop_description_condition, 1.3.0's AttributeDropout) go between the conditions and the null
    ones, and the next token comes from uncond + cfg * (style + beta * (cond - style) - uncond).
    Returns a function that undoes it."""
    from audiocraft.modules.conditioners import AttributeDropout

    provider = lm.condition_provider
    tokenize = provider.tokenize

    def three_rows(inputs):
        n = len(inputs) // 2  # 1.3.0's generate hands [conditions, null conditions]
        style_only = AttributeDropout(p={"text": {"description": 1.0}, "wav": {"self_wav": 0.0}})(inputs[:n])
        return tokenize(inputs[:n] + style_only + inputs[n:])

    def sample(sequence, cfg_conditions, unconditional_state, use_sampling=False, temp=1.0, top_k=0, top_p=0.0,
               cfg_coef=None, two_step_cfg=None):  # fmt: skip
        assert not use_sampling and isinstance(cfg_conditions, dict) and cfg_conditions
        b = sequence.shape[0]
        logits = lm(torch.cat([sequence] * 3, dim=0), conditions=[], condition_tensors=cfg_conditions)
        cond, style, uncond = logits.split(b, dim=0)
        logits = uncond + cfg_coef * (style + beta * (cond - style) - uncond)
        return torch.argmax(logits.permute(0, 1, 3, 2)[..., -1], dim=-1, keepdim=True)

    provider.tokenize = three_rows
    lm._sample_next_token = sample

    def undo():
        del provider.tokenize, lm._sample_next_token

    return undo


def style_audio() -> np.ndarray:
    """5 s at 32 kHz: a chord that changes, with a little noise."""
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    rng = np.random.default_rng(4)
    wav = sum(0.2 * np.sin(2 * np.pi * f * t * (1 + 0.05 * np.sin(t))) for f in (220.0, 277.2, 329.6))
    return (wav + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def main() -> None:
    import audiocraft
    from audiocraft.modules.conditioners import ConditioningAttributes, WavCondition

    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t5 = write_t5("t5-base", 11)
    lm, export, mert_dir = build(303)
    style = lm.condition_provider.conditioners["self_wav"]
    wav = style_audio()
    np.save(OUT / "style.npy", wav)
    runs = []
    for i, (prompt, audio, excerpt, eval_q, beta) in enumerate(RUNS):
        style.set_params(eval_q, excerpt)
        if audio is None:
            cond = WavCondition(torch.zeros(1, 1, 1), torch.tensor([0]), [SAMPLE_RATE], [None], [None])
        else:
            x = torch.from_numpy(wav)[None, None]
            cond = WavCondition(x, torch.tensor([x.shape[-1]]), [SAMPLE_RATE], [None], [None])
        attrs = [ConditioningAttributes(text={"description": prompt}, wav={"self_wav": cond})]
        undo = double_guidance(lm, beta) if beta is not None else None
        with torch.no_grad():
            tokens = lm.generate(None, attrs, num_samples=1, max_gen_len=int(DURATION_S * 50),
                                 use_sampling=False, cfg_coef=CFG_COEF, two_step_cfg=False)  # fmt: skip
        if undo is not None:
            undo()
        np.save(OUT / f"tokens-{i}.npy", tokens[0].numpy())
        np.save(OUT / f"style-states-{i}.npy", style.embeds[0].numpy())  # the conditional row
        if audio is not None:
            np.save(OUT / f"style-codes-{i}.npy", style.codes[0].numpy())
        runs.append({"prompt": prompt, "style": audio is not None, "excerpt_s": excerpt, "eval_q": eval_q,
                     "cfg_coef_beta": beta,
                     "tokens": f"tokens-{i}.npy", "states": f"style-states-{i}.npy",
                     "codes": f"style-codes-{i}.npy" if audio is not None else None})  # fmt: skip
    results = {"audiocraft": audiocraft.__version__, "torch": torch.__version__, "export": str(export),
               "t5": str(t5), "mert": str(mert_dir), "duration_s": DURATION_S, "cfg_coef": CFG_COEF,
               "sample_rate": SAMPLE_RATE, "audio": "style.npy", "runs": runs}  # fmt: skip
    (OUT / "style.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
