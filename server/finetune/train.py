"""LoRA training of a MusicGen decoder on a dataset's codes, as audiocraft's MusicGen solver trains:
teacher forcing over the delay-patterned codebooks, the cross-entropy of each codebook over the
positions the pattern fills (the special positions are masked out), averaged over the codebooks, and
the text condition dropped (zero states, zero mask: the engine's null row) for a share of the batch,
audiocraft's classifier-free guidance training dropout.

Training runs on the transformers module (the engine's packed decoder cannot be differentiated);
the adapter (PEFT, on the decoder's attention q/k/v/out projections, self- and cross-attention, and
optionally fc1/fc2) is what is saved, merged into the base at load (server/finetune/adapters.py).

**Resuming reaches the same weights.** Everything random in step s (which windows, which rows lose
their text) comes from a generator seeded with (seed, s), and the LoRA A matrices are initialised
from one seeded with the seed; the model runs with dropout off (audiocraft's MusicGen LM trains with
dropout 0) and never touches torch's global generator. A checkpoint holds the adapter, the optimizer
(AdamW's moments and step counts), the losses so far and the step, so the random state of what
follows is the step number itself: a run resumed from step s computes exactly what an uninterrupted
run computes after step s, bit for bit at the same thread count.
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

from lib.files import write_atomic
from lib.finetune import CFG_DROPOUT, FinetuneJob
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


def load_base(folder: Path, kind: str):
    """The base model, fp32, from its snapshot (no network)."""
    from transformers import MusicgenForConditionalGeneration

    if kind != "musicgen":
        raise ValueError(f"fine-tuning supports MusicGen models (not {kind}) in this build")
    model = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    return model.eval()


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
    """One fine-tune run over the dataset's windows (`codes`: [K, frames] int each, `captions` beside)."""

    def __init__(
        self,
        model,
        tokenizer,
        codes: list[torch.Tensor],
        captions: list[str],
        job: FinetuneJob,
        kind: str = "musicgen",
        device: torch.device | None = None,
    ):
        from peft import get_peft_model

        self.job = job
        self.device = device or torch.device("cpu")
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
        self.decoder = get_peft_model(self.model.decoder, lora_config(job, self.num_codebooks))
        self._init_lora(job.seed)
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

    def _init_lora(self, seed: int) -> None:
        """PEFT draws A from torch's global generator; draw it from the seed instead (same init, same run)."""
        g = _generator(seed)
        for name, param in sorted(self.decoder.named_parameters()):
            if "lora_A" in name:
                with torch.no_grad():
                    torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=g)

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
        width = max(int(m.shape[0]) for m in masks)
        hidden = torch.stack([F.pad(s, (0, 0, 0, width - s.shape[0])) for s in states])
        mask = torch.stack([F.pad(m, (0, width - m.shape[0])) for m in masks])
        inputs = seq[:, :, :-1]
        b, k, t = inputs.shape
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            logits = self.decoder(
                input_ids=inputs.reshape(b * k, t), encoder_hidden_states=hidden, encoder_attention_mask=mask
            ).logits
        logits = logits.float().reshape(b, k, t, -1)
        labels = seq[:, :, 1:].masked_fill(~real[:, :, 1:], -100)
        per_codebook = [F.cross_entropy(logits[:, q].reshape(b * t, -1), labels[:, q].reshape(-1)) for q in range(k)]
        return torch.stack(per_codebook).mean()

    def step(self, step: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)  # audiocraft's max_norm
        self.optimizer.step()
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


def dataset_codes(folder: Path, windows: list[dict]) -> tuple[list[torch.Tensor], list[str]]:
    """A dataset's windows as tensors [K, frames] and their captions (server/finetune/store.py)."""
    tensors = load_file(str(folder / "codes.safetensors"))
    return [tensors[f"w{i}"] for i in range(len(windows))], [w["caption"] for w in windows]
