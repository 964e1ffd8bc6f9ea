"""LoRA training of a MusicGen decoder on a dataset's codes, as audiocraft's MusicGen solver trains:
teacher forcing over the delay-patterned codebooks, the cross-entropy of each codebook over the
positions the pattern fills (the special positions are masked out), averaged over the codebooks, and
the text condition dropped (zero states, zero mask: the engine's null row) for a share of the batch,
audiocraft's classifier-free guidance training dropout.

**Bases.** MusicGen; AudioGen, from the engine's converted copy of its audiocraft export (with
audiocraft's positional table, as generation loads it); MusicGen-Melody, whose decoder input is
prefixed with the window's chroma and the text as generation prefixes it, the melody dropped alone
for half the rows (audiocraft's chroma2music attribute dropout) besides the guidance dropout.

Training runs on the transformers module (the engine's packed decoder cannot be differentiated);
the adapter (PEFT, on the decoder's attention q/k/v/out projections, self- and cross-attention, and
optionally fc1/fc2) is what is saved, merged into the base at load (server/finetune/adapters.py).

**Resuming reaches the same weights.** Everything random in step s (which windows, which rows lose
their text or melody) comes from a generator seeded with (seed, s); the adapters are initialised
under torch's global generator forked, seeded with the seed and restored after (PEFT draws from it);
the model runs with dropout off (audiocraft's MusicGen LM trains with dropout 0). So a run is a
function of its job and its data (and the thread count): never of what the process did before. A
checkpoint holds the adapter, the optimizer (AdamW's moments and step counts, and fp16's gradient
scale), the losses so far and the step, so the random state of what follows is the step number
itself: a run resumed from step s computes exactly what an uninterrupted run computes after step s,
bit for bit at the same thread count.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lib.catalogue import ModelSpec
from lib.files import write_atomic
from lib.finetune import CFG_DROPOUT, MELODY_DROPOUT, TRAINABLE_KINDS, FinetuneJob
from server.engine.decode import NULL_CHROMA_BIN, chroma_states
from server.engine.delay import codebook_delays

ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]
FFN = ["fc1", "fc2"]
CHECKPOINT_FORMAT = 1
ADAM_BETAS = (0.9, 0.95)  # audiocraft's MusicGen optimizer (config/solver/musicgen/default.yaml)
_STEP_MIX = 0x9E3779B97F4A7C15


class Stopped(Exception):
    """The run was asked to stop (cancel, or the server stopping): checkpointed where it was."""


@dataclass
class Progress:
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds_per_step: float


@dataclass
class Outcome:
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def first_loss(self) -> float:
        head = self.losses[: min(10, len(self.losses))]
        return sum(head) / len(head)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-min(10, len(self.losses)) :]
        return sum(tail) / len(tail)


def targets(ffn: bool, heads: bool = False, num_codebooks: int = 0) -> list[str]:
    """The decoder's modules that get adapters: attention, then optionally the FFN, then optionally the
    codebook embeddings and heads (what a randomly initialised tiny model needs to learn a pattern)."""
    codebook = [f"{m}.{k}" for m in ("embed_tokens", "lm_heads") for k in range(num_codebooks)]
    return ATTENTION + (FFN if ffn else []) + (codebook if heads else [])


def base_folder(spec: ModelSpec, snapshot: Path) -> tuple[Path, bool]:
    """The MusicGen-class folder a base trains from, and whether it came from audiocraft's export
    format (AudioGen: the engine's converted copy, server/models/convert/, whose positional table is
    audiocraft's)."""
    if spec.hub_format == "audiocraft":
        from server.models.audiogen import converted_folder

        return converted_folder(spec, snapshot), True
    return snapshot, False


def load_base(folder: Path, kind: str, audiocraft: bool = False):
    """The base model, fp32, from its MusicGen-class folder (no network), as the engine loads it
    (server/models/musicgen.py load_folder), so training sees the numbers generation sees."""
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    from server.models.musicgen import audiocraft_positions
    from server.models.registry import LOADING

    if kind not in TRAINABLE_KINDS:
        raise ValueError(f"fine-tuning supports {', '.join(TRAINABLE_KINDS)} (not {kind})")
    cls = MusicgenMelodyForConditionalGeneration if kind == "musicgen-melody" else MusicgenForConditionalGeneration
    # transformers initialises the modules (from torch's global generator) before the weights are
    # read over them: forked and seeded, the process's generator is untouched and nothing the
    # checkpoint lacks could differ from run to run.
    # LOADING: one transformers load at a time in the process (server/models/registry.py says why).
    with LOADING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    if audiocraft:
        embed = model.decoder.model.decoder.embed_positions
        embed.weights = audiocraft_positions(embed.weights.shape[0], embed.weights.shape[1])
    return model.eval()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run (None: plain fp32). "auto" is fp32 on a CPU (the engine's packed
    fp32 is what it serves, and CPU bf16 autocast is only faster with AMX) and, on CUDA, bf16 where
    the card has it, else fp16 (with a gradient scaler: fp16 gradients underflow)."""
    if precision == "float32":
        return None
    if precision in ("bfloat16", "float16"):
        return getattr(torch, precision)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def decoder_shape(model) -> dict[str, int]:
    """The decoder dims an adapter depends on."""
    c = model.config.decoder
    return {
        "hidden_size": int(c.hidden_size),
        "num_hidden_layers": int(c.num_hidden_layers),
        "num_attention_heads": int(c.num_attention_heads),
        "ffn_dim": int(c.ffn_dim),
        "num_codebooks": int(c.num_codebooks),
        "vocab_size": int(c.vocab_size),
        "audio_channels": int(getattr(c, "audio_channels", 1)),
    }


def lora_config(job: FinetuneJob, num_codebooks: int):
    from peft import LoraConfig

    modules = targets(job.ffn, job.heads, num_codebooks)
    return LoraConfig(r=job.rank, lora_alpha=job.alpha, lora_dropout=0.0, target_modules=modules, bias="none")


def _generator(seed: int, step: int = -1) -> torch.Generator:
    return torch.Generator().manual_seed((seed + (step + 1) * _STEP_MIX) % (2**63))


class Trainer:
    """One fine-tune run over the dataset's windows (`codes`: [K, frames] int each, `captions` beside;
    for a melody model, `chroma`: each window's pitch class per chroma frame, int [frames])."""

    def __init__(
        self,
        model,
        tokenizer,
        codes: list[torch.Tensor],
        captions: list[str],
        job: FinetuneJob,
        kind: str = "musicgen",
        device: torch.device | None = None,
        chroma: list[torch.Tensor] | None = None,
    ):
        from peft import get_peft_model

        self.job = job
        self.device = device or torch.device("cpu")
        self.melody = getattr(model.config, "chroma_length", None) is not None
        if self.melody and chroma is None:
            raise ValueError("a melody model trains on each window's chroma: pass chroma")
        self.chroma = chroma if self.melody else None
        self.autocast = autocast_dtype(job.precision, self.device)
        # fp16 only: its gradients are scaled up so they do not underflow (a no-op otherwise).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast is torch.float16)
        self.model = model.to(self.device).eval()  # eval: no dropout (see the module's doc)
        for p in self.model.parameters():
            p.requires_grad_(False)
        config = self.model.config.decoder
        self.num_codebooks = int(config.num_codebooks)
        self.pad = int(config.pad_token_id)
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        self.start = int(start if start is not None else self.pad)
        self.delays = codebook_delays(self.num_codebooks, int(getattr(config, "audio_channels", 1)) == 2)
        self.codes = [c.long() for c in codes]
        self.captions = captions
        self.cfg_dropout = CFG_DROPOUT.get(kind, 0.3)
        self.text = self._encode_captions(tokenizer)
        self.decoder = self._peft_model(get_peft_model, job)
        self.params = [p for p in self.decoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=job.learning_rate, betas=ADAM_BETAS, weight_decay=0.0)
        self._perms: dict[int, torch.Tensor] = {}
        self.resumed_from: int | None = None

    # -- set-up -------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_captions(self, tokenizer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each distinct caption's projected, masked encoder states [L, D] and mask [L], once (T5 is frozen)."""
        out = {}
        project = getattr(self.model, "enc_to_dec_proj", None)
        for caption in sorted(set(self.captions)):
            tokens = tokenizer([caption], return_tensors="pt").to(self.device)
            hidden = self.model.text_encoder(**tokens).last_hidden_state
            mask = tokens.attention_mask if caption.strip() else torch.zeros_like(tokens.attention_mask)
            if project is not None:
                hidden = project(hidden)
            out[caption] = ((hidden * mask[..., None])[0], mask[0])
        return out

    def _peft_model(self, get_peft_model, job: FinetuneJob):
        """The decoder with its adapters, every random number of their initialisation drawn from the
        seed. PEFT draws from torch's global generator (LoRA A of linear layers, and B of embeddings:
        normal_), whose state is whatever the process did before; it is forked here, seeded, and left
        as it was, so the run is a function of the job and the data alone."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(job.seed)
            return get_peft_model(self.model.decoder, lora_config(job, self.num_codebooks))

    # -- one step -----------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 0 over the run (audiocraft's schedule, LoRA's scale)."""
        job = self.job
        if step < job.warmup_steps:
            return job.learning_rate * (step + 1) / job.warmup_steps
        span = max(1, job.total_steps - job.warmup_steps)
        return job.learning_rate * 0.5 * (1 + math.cos(math.pi * (step - job.warmup_steps) / span))

    def batch_indices(self, step: int) -> list[int]:
        """Epoch after epoch, each a permutation seeded by (seed, epoch)."""
        n, b = len(self.codes), self.job.batch_size
        out = []
        for i in range(step * b, step * b + b):
            epoch, pos = divmod(i, n)
            if epoch not in self._perms:
                self._perms = {epoch: torch.randperm(n, generator=_generator(self.job.seed ^ 0x5EED, epoch))}
            out.append(int(self._perms[epoch][pos]))
        return out

    def sequences(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The delay-patterned sequences [B, K, T] (start token, then codebook k shifted by its delay,
        pad elsewhere) and where each is a real token [B, K, T]."""
        frames = max(int(c.shape[1]) for c in rows)
        length = 1 + frames + int(self.delays.max())
        seq = torch.full((len(rows), self.num_codebooks, length), self.pad, dtype=torch.long)
        real = torch.zeros_like(seq, dtype=torch.bool)
        seq[:, :, 0] = self.start
        for b, codes in enumerate(rows):
            n = int(codes.shape[1])
            for k, d in enumerate(self.delays.tolist()):
                seq[b, k, d + 1 : d + 1 + n] = codes[k]
                real[b, k, d + 1 : d + 1 + n] = True
        return seq, real

    def loss(self, step: int) -> torch.Tensor:
        idx = self.batch_indices(step)
        seq, real = self.sequences([self.codes[i] for i in idx])
        seq, real = seq.to(self.device), real.to(self.device)
        g = _generator(self.job.seed, step)
        dropped = torch.rand(len(idx), generator=g) < self.cfg_dropout
        states, masks = [], []
        for i, drop in zip(idx, dropped.tolist(), strict=True):
            hidden, mask = self.text[self.captions[i]]
            states.append(torch.zeros_like(hidden) if drop else hidden)
            masks.append(torch.zeros_like(mask) if drop else mask)
        inputs = seq[:, :, :-1]
        b, k, t = inputs.shape
        autocast = torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=bool(self.autocast))
        with autocast:
            if self.melody:
                # Drawn after the text's, so a MusicGen run's numbers are what they were before melody.
                melody_dropped = torch.rand(len(idx), generator=g) < MELODY_DROPOUT
                keep = [not (d or m) for d, m in zip(dropped.tolist(), melody_dropped.tolist(), strict=True)]
                logits = self._melody_logits(inputs, idx, keep, states)
            else:
                width = max(int(m.shape[0]) for m in masks)
                hidden = torch.stack([F.pad(s, (0, 0, 0, width - s.shape[0])) for s in states])
                mask = torch.stack([F.pad(m, (0, width - m.shape[0])) for m in masks])
                logits = self.decoder(
                    input_ids=inputs.reshape(b * k, t), encoder_hidden_states=hidden, encoder_attention_mask=mask
                ).logits
        logits = logits.float().reshape(b, k, t, -1)
        labels = seq[:, :, 1:].masked_fill(~real[:, :, 1:], -100)
        per_codebook = [F.cross_entropy(logits[:, q].reshape(b * t, -1), labels[:, q].reshape(-1)) for q in range(k)]
        return torch.stack(per_codebook).mean()

    def _melody_logits(
        self, inputs: torch.Tensor, idx: list[int], keep_melody: list[bool], text: list[torch.Tensor]
    ) -> torch.Tensor:
        """[B * K, T, vocab] of a melody model: its decoder input is prefixed with the conditioning
        (the window's chroma, or the null melody where it is dropped, then the text states), as the
        engine's generation prefixes it (server/engine/decode.py melody_prefix). Rows whose text is
        as long go through together; the prefix is never padded, because padded positions would move
        the audio's positions away from where generation puts them."""
        b, k, t = inputs.shape
        out: list[torch.Tensor | None] = [None] * b
        for width in sorted({int(s.shape[0]) for s in text}):
            rows = [r for r in range(b) if int(text[r].shape[0]) == width]
            prefix = torch.cat([self.melody_prefix(idx[r], keep_melody[r], text[r]) for r in rows])
            logits = self.decoder(input_ids=inputs[rows].reshape(len(rows) * k, t), encoder_hidden_states=prefix).logits
            for n, r in enumerate(logits[:, -t:].reshape(len(rows), k, t, -1)):
                out[rows[n]] = r
        return torch.stack(out)

    def melody_prefix(self, window: int, keep_melody: bool, text: torch.Tensor) -> torch.Tensor:
        """[1, chroma_length + text length, hidden]: window `window`'s chroma (or the null melody),
        then its text states (`text`: the caption's, or zeros where the text is dropped)."""
        bins = self.chroma[window].long() if keep_melody else torch.tensor([NULL_CHROMA_BIN])
        onehot = F.one_hot(bins, int(self.model.config.num_chroma)).float().to(self.device)
        return torch.cat([chroma_states(self.model, onehot[None]), text[None]], dim=1)

    def step(self, step: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(step)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)  # audiocraft's max_norm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    # -- checkpoints --------------------------------------------------------------------------

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.decoder).items()}

    def save_checkpoint(self, path: Path, step: int, losses: list[float]) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "adapter": self.adapter_state(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "losses": losses,
                # The random state of every later step is (seed, step): see the module's doc.
                "rng": {"seed": self.job.seed, "scheme": "generator(seed, step)"},
                "job": self.job.model_dump(mode="json", by_alias=True),
            },
            buffer,
        )
        write_atomic(path, buffer.getvalue())

    def load_checkpoint(self, path: Path) -> tuple[int, list[float]] | None:
        """(step, losses) from a checkpoint of this same run, else None (a fresh start)."""
        from peft import set_peft_model_state_dict

        if not path.is_file():
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        mine = self.job.model_dump(mode="json", by_alias=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("job") != mine:
            return None
        set_peft_model_state_dict(self.decoder, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return int(state["step"]), list(state["losses"])

    # -- the run ------------------------------------------------------------------------------

    def run(
        self,
        checkpoint: Path,
        on_step: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Outcome:
        resumed = self.load_checkpoint(checkpoint)
        first, losses = resumed if resumed is not None else (0, [])
        self.resumed_from = first if resumed is not None else None
        outcome = Outcome(steps=self.job.total_steps, losses=losses, resumed_from=self.resumed_from)
        total = self.job.total_steps
        for step in range(first, total):
            if should_stop is not None and should_stop():
                self.save_checkpoint(checkpoint, step, losses)
                raise Stopped
            started = time.perf_counter()
            losses.append(self.step(step))
            done = step + 1
            if done % self.job.checkpoint_every == 0 or done == total:
                self.save_checkpoint(checkpoint, done, losses)
            if on_step is not None:
                on_step(Progress(done, total, losses[-1], self.lr_at(step), time.perf_counter() - started))
        return outcome


def dataset_codes(folder: Path, windows: list[dict]) -> tuple[list[torch.Tensor], list[str], list[torch.Tensor] | None]:
    """A dataset's windows as tensors [K, frames], their captions, and (a dataset with chroma) each
    window's pitch classes [chroma frames] (server/finetune/store.py)."""
    tensors = load_file(str(folder / "codes.safetensors"))
    codes = [tensors[f"w{i}"] for i in range(len(windows))]
    chroma = [tensors[f"c{i}"] for i in range(len(windows))] if "c0" in tensors else None
    return codes, [w["caption"] for w in windows], chroma
