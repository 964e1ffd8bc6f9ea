"""Fine-tuning's schemas and names, torch-free (the CLI, an API node and the lanes share them):
datasets (POST /api/datasets, job kind "dataset") and fine-tune jobs (POST /api/finetune, kind
"finetune"). A training job's live progress is lib.schemas.TrainingProgress, beside the job view."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lib.schemas import MAX_SEED, REQUEST_CONFIG, RequestSchema

# A dataset's name, and the part after "+" of a fine-tuned model's name: lower case, a path segment
# on every filesystem, never "." or "..".
LABEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_LABEL = re.compile(LABEL_PATTERN)
SEPARATOR = "+"  # <base model>+<label>: musicgen-small+my-studio

# Audio files a dataset takes (anything read_audio decodes; these are the names it looks for).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".aiff", ".aif")
MIN_FILE_S = 1.0  # shorter files teach nothing (and EnCodec needs whole frames)
MAX_FILE_S = 1800.0  # 30 min a file: longer is almost always a mistake (a whole album as one file)

# The published LoRA recipes for MusicGen (ylacombe/musicgen-dreamboothing, the transformers port's
# training script): lr 2e-4, per-device batch 2, a few epochs, LoRA on the decoder's attention.
DEFAULT_RANK = 16
DEFAULT_ALPHA = 32
DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BATCH_SIZE = 2
DEFAULT_EPOCHS = 4
# The model kinds a fine-tune can start from (the decoder is a MusicGen-class transformers module).
TRAINABLE_KINDS = ("musicgen", "musicgen-melody", "audiogen")
# audiocraft's classifier-free guidance training dropout (every condition at once, per row here):
# config/conditioner/text2music.yaml (0.3, MusicGen), chroma2music.yaml (0.2, MusicGen-Melody) and
# text2sound.yaml (0.1, AudioGen).
CFG_DROPOUT = {"musicgen": 0.3, "musicgen-melody": 0.2, "audiogen": 0.1}
# chroma2music.yaml's attribute dropout of the melody alone (self_wav: 0.5): half the rows learn to
# follow the text without a melody, so the model also generates from text alone.
MELODY_DROPOUT = 0.5


def check_label(value: str, what: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(
            f"{what} must be 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )
    return value


class DatasetJob(RequestSchema):
    """What a dataset job carries (kind "dataset"): the uploads are the job's artifacts."""

    model_config = REQUEST_CONFIG

    name: str = Field(..., description="The dataset's name (a-z, 0-9, '-', '_')")
    model: str | None = Field(None, description="The model whose codec makes the codes (default: the music model)")
    caption: str = Field("", max_length=2000, description="The caption of files that have no caption of their own")
    window_s: float | None = Field(
        None, gt=1.0, le=30.0, description="Cut files into windows of at most this (default: the model's window)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_label(v, "name")


class DatasetFile(BaseModel):
    """One uploaded file's fate: used (cut into windows) or skipped, and why."""

    file: str
    status: Literal["ok", "skipped"]
    reason: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    windows: int = 0
    caption: str | None = None
    caption_from: Literal["sidecar-txt", "sidecar-json", "metadata.jsonl", "default", "none"] | None = None


class CodecShape(BaseModel):
    """What the codes of a dataset fit: the codec they were made with."""

    sample_rate: int
    channels: int
    codebooks: int
    codebook_size: int
    frame_rate_hz: float


class DatasetInfo(BaseModel):
    name: str
    model: str = Field(..., description="The model whose codec made the codes")
    codec: CodecShape
    window_s: float
    windows: int
    duration_s: float = Field(..., description="Seconds of audio over every window")
    created_at: float
    files: list[DatasetFile]
    job: str | None = Field(None, description="The dataset job that built it")
    chroma: bool = Field(
        False, description="Each window's chroma is stored too (32 kHz codecs): MusicGen-Melody can train on it"
    )


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


class FinetuneRequest(RequestSchema):
    """POST /api/finetune: LoRA on a base model's decoder, from a dataset's codes."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    base_model: str = Field(..., description="The catalogue model to adapt (musicgen-small, ...)")
    dataset: str = Field(..., description="A dataset made for the base model's codec (POST /api/datasets)")
    name: str = Field(
        ..., description="The new model: <base_model>+<label> (musicgen-small+my-studio), or the label alone"
    )
    method: Literal["lora"] = "lora"
    rank: int = Field(DEFAULT_RANK, ge=1, le=256, description="LoRA rank")
    alpha: float = Field(DEFAULT_ALPHA, gt=0, le=1024, description="LoRA alpha (the update is scaled by alpha/rank)")
    learning_rate: float = Field(DEFAULT_LEARNING_RATE, gt=0, le=1.0)
    steps: int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps (or epochs)")
    epochs: float | None = Field(None, gt=0, le=10_000, description="Passes over the dataset's windows")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=64)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    ffn: bool = Field(False, description="Adapt the feed-forward projections (fc1, fc2) too")
    heads: bool = Field(False, description="Adapt the codebook embeddings and heads (embed_tokens, lm_heads) too")
    checkpoint_every: int = Field(50, ge=1, le=100_000, description="Steps between checkpoints")
    warmup_steps: int = Field(0, ge=0, le=100_000)
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Autocast dtype of the forward pass; auto: fp32 on a CPU, on CUDA bf16 where the card has it, "
        "else fp16 (with a gradient scaler). The adapters and optimizer stay fp32",
    )
    async_: bool = Field(True, alias="async", description="Answer 202 at once (the default); false waits")

    @model_validator(mode="after")
    def _one_length(self) -> FinetuneRequest:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        return self


class FinetuneJob(FinetuneRequest):
    """What a fine-tune job carries (kind "finetune"): the request with the name made whole and the
    step count fixed at submission (epochs become steps over the dataset's windows)."""

    total_steps: int = Field(..., ge=1)


class FinetuneFacts(BaseModel):
    """What /api/models says of a fine-tuned model (finetune.json in its snapshot)."""

    base: str
    dataset: str
    steps: int
    final_loss: float
    first_loss: float
    rank: int
    alpha: float
    learning_rate: float
    batch_size: int
    seed: int
    targets: list[str]
    job: str | None = None
    created_at: float
    # The base decoder's shape, so an adapter is never put on a model it was not trained on.
    base_shape: dict[str, int]


def model_name(base: str, name: str) -> str:
    """The fine-tuned model's full name: <base>+<label>; ValueError when it is not one."""
    if SEPARATOR in name:
        head, _, label = name.partition(SEPARATOR)
        if head != base:
            raise ValueError(f"name must start with its base model: {base}{SEPARATOR}{label}")
    else:
        label = name
    check_label(label, f"the part of the name after '{SEPARATOR}'")
    return f"{base}{SEPARATOR}{label}"


class DatasetForm(DatasetJob):
    """POST /api/datasets: the fields beside the files (multipart)."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    async_: bool = Field(False, alias="async", description="Answer 202 with the job at once; false waits for it")
