"""A fine-tuned model on disk and in memory: a PEFT adapter (adapter_config.json,
adapter_model.safetensors) and finetune.json (lib.finetune.FinetuneFacts), installed as the repo
finetuned/<name> of the hub cache; loaded as its base with the adapter merged into the weights, so
the engine packs and steps it as fast as the base."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lib.catalogue import ModelSpec, get_spec
from lib.finetune import FinetuneFacts
from server.finetune import train
from server.hub import finetuned, store
from server.models.errors import AdapterMismatch
from server.models.loaded import TextToAudioLM

README = "# {name}\n\nA LoRA adapter for {base}, trained by resource-audiocraft on the dataset '{dataset}'.\n"


def save(trainer: train.Trainer, outcome: train.Outcome, out: Path, name: str, job_id: str | None) -> FinetuneFacts:
    """The adapter and its facts into `out` (a folder the hub writer installs)."""
    job = trainer.job
    trainer.decoder.save_pretrained(out)
    facts = FinetuneFacts(
        base=job.base_model,
        dataset=job.dataset,
        steps=outcome.steps,
        final_loss=round(outcome.final_loss, 6),
        first_loss=round(outcome.first_loss, 6),
        rank=job.rank,
        alpha=job.alpha,
        learning_rate=job.learning_rate,
        batch_size=job.batch_size,
        seed=job.seed,
        targets=train.targets(job.ffn, job.heads, trainer.num_codebooks),
        job=job_id,
        created_at=time.time(),
        base_shape=train.decoder_shape(trainer.model),
    )
    (out / finetuned.FACTS).write_text(json.dumps(facts.model_dump(mode="json"), indent=1))
    (out / "README.md").write_text(README.format(name=name, base=job.base_model, dataset=job.dataset))
    return facts


def load(spec: ModelSpec, snapshot: Path, hub_cache: Path, device: torch.device, precision: str) -> TextToAudioLM:
    """Base + adapter, merged. The base must be installed and of the shape the adapter was trained on."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from server.models.musicgen import prepare

    started = time.perf_counter()
    facts = FinetuneFacts.model_validate_json((snapshot / finetuned.FACTS).read_text())
    base = get_spec(facts.base)
    base_snapshot = store.snapshot_dir(base, hub_cache)
    if base_snapshot is None:
        raise store.ModelNotInstalled(base)
    folder, audiocraft = train.base_folder(base, base_snapshot)
    model = train.load_base(folder, base.kind, audiocraft)
    shape = train.decoder_shape(model)
    if shape != facts.base_shape:
        differs = ", ".join(
            f"{k} {facts.base_shape.get(k)} vs {v}" for k, v in shape.items() if facts.base_shape.get(k) != v
        )
        raise AdapterMismatch(
            f"{spec.name} is an adapter for a {facts.base} of another shape than the installed one ({differs})",
            hint=f"install the {facts.base} it was trained on, or fine-tune again on this one",
        )
    merged = PeftModel.from_pretrained(model.decoder, snapshot).merge_and_unload()
    model.decoder = merged.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    lm = prepare(model, spec, tokenizer, device, precision, snapshot)
    lm.load_time_s = time.perf_counter() - started
    return lm
