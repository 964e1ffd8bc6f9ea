"""Datasets and fine-tune jobs: the checks that need the server's state, then a job to queue."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

from lib.catalogue import ModelSpec, UnknownModel, get_spec
from lib.errors import Conflict, Invalid
from lib.finetune import (
    DEFAULT_EPOCHS,
    TRAINABLE_KINDS,
    DatasetForm,
    DatasetInfo,
    DatasetJob,
    FinetuneJob,
    FinetuneRequest,
    model_name,
)
from server.finetune import store as datasets
from server.jobs.job import PRIORITY_BATCH, Job
from server.serving import downloads
from server.serving.generation import default_model

if TYPE_CHECKING:
    from server.services import Services

MAX_DATASET_FILES = 2000


def _safe_name(filename: str | None, index: int) -> str:
    base = (filename or f"file{index}").replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base).lstrip(".") or f"file{index}"
    return f"{index}-{safe}"


def create_dataset(svc: Services, form: DatasetForm, files: Iterable[tuple[str | None, BinaryIO]]) -> Job:
    """The uploads kept with a new dataset job (kind "dataset")."""
    if datasets.exists(svc.settings.data_dir, form.name):
        raise datasets.DatasetExists(form.name)
    spec = get_spec(form.model or default_model(svc, "music"))
    if spec.kind not in TRAINABLE_KINDS or spec.base is not None:
        raise Invalid(
            f"{spec.name} cannot be fine-tuned: datasets are for MusicGen, MusicGen-Melody and AudioGen models",
            field="model",
        )
    after = downloads.require(svc, spec)
    svc.scheduler.check_space()
    request = DatasetJob(**form.model_dump(exclude={"async_"}) | {"model": spec.name})
    job = Job(kind="dataset", model=spec.name, request=request, seed=0, priority=PRIORITY_BATCH)
    job.run_after(after)
    artifacts = svc.scheduler.artifacts
    count = 0
    try:
        for count, (filename, f) in enumerate(files, start=1):
            if count > MAX_DATASET_FILES:
                raise Invalid(f"send at most {MAX_DATASET_FILES} files (or a ZIP of them)", field="files")
            f.seek(0)
            artifacts.write_from(job.id, _safe_name(filename, count), f)
        if count == 0:
            raise Invalid("send the audio files (and captions) in the multipart field 'files', or a ZIP", field="files")
        return svc.scheduler.submit(job)
    except BaseException:
        artifacts.remove(job.id)
        raise


def active_finetunes(svc: Services) -> list[Job]:
    out = []
    for state in ("queued", "running"):
        jobs, _ = svc.scheduler.list(state, limit=1000)
        out += [j for j in jobs if j.kind == "finetune"]
    return out


def start_finetune(svc: Services, req: FinetuneRequest) -> Job:
    base = get_spec(req.base_model)
    if base.base is not None or base.kind not in TRAINABLE_KINDS:
        raise Invalid(
            f"{base.name} cannot be fine-tuned in this build",
            field="base_model",
            hint="fine-tune a MusicGen, MusicGen-Melody or AudioGen model (musicgen-small, musicgen-melody, "
            "audiogen-medium, ...)",
        )
    try:
        name = model_name(base.name, req.name)
    except ValueError as exc:
        raise Invalid(str(exc), field="name") from None
    try:
        get_spec(name)
    except UnknownModel:
        pass
    else:
        raise Conflict(f"a model named {name} exists", field="name", hint=f"choose another name, or delete {name}")
    if any(j.request.name == name for j in active_finetunes(svc)):
        raise Conflict(f"a fine-tune job is already making {name}", field="name")
    info = datasets.read(svc.settings.data_dir, req.dataset)
    check_dataset_fits(info, base)
    after = downloads.require(svc, base)
    if req.steps is not None:
        steps = req.steps
    else:
        steps = max(1, math.ceil((req.epochs or DEFAULT_EPOCHS) * info.windows / req.batch_size))
    fields = req.model_dump(by_alias=True) | {"name": name, "base_model": base.name}
    job_request = FinetuneJob(**fields, total_steps=steps)
    job = Job(kind="finetune", model=base.name, request=job_request, seed=req.seed, priority=PRIORITY_BATCH)
    job.run_after(after)
    return svc.scheduler.submit(job)


class DatasetMismatch(Invalid):
    code = "dataset_mismatch"


def check_dataset_fits(info: DatasetInfo, base: ModelSpec) -> None:
    """A dataset's codes are its codec's: a base trains only on codes of its own codec (AudioGen's
    16 kHz EnCodec is not MusicGen's 32 kHz one), and a melody base needs each window's chroma."""
    codec = info.codec
    mine = (base.sample_rate, base.channels, base.codebooks, base.codebook_size, base.frame_rate_hz)
    if (codec.sample_rate, codec.channels, codec.codebooks, codec.codebook_size, codec.frame_rate_hz) != mine:
        raise DatasetMismatch(
            f"dataset {info.name} holds the codes of {info.model}'s codec ({codec.codebooks} codebooks, "
            f"{codec.channels} channel(s) at {codec.sample_rate} Hz); {base.name} reads its own codec's "
            f"({base.codebooks} codebooks, {base.channels} channel(s) at {base.sample_rate} Hz)",
            field="dataset",
            hint=f"build a dataset for {base.name} from the same files (POST /api/datasets with model={base.name}, "
            f"or `resource-audiocraft datasets add DIR --model {base.name}`)",
        )
    if base.kind == "musicgen-melody" and not info.chroma:
        raise DatasetMismatch(
            f"dataset {info.name} has no chroma of its windows (it was built before melody fine-tuning); "
            f"{base.name} trains on each window's melody",
            field="dataset",
            hint=f"build it again from the same files (POST /api/datasets with model={base.name})",
        )


def finetune_jobs(svc: Services, state: str | None = None, limit: int = 50) -> list[Job]:
    jobs, _ = svc.scheduler.list(state, limit=1000)
    return [j for j in jobs if j.kind == "finetune"][:limit]
