"""A dataset from uploaded files: captions paired, each file checked, cut into windows, resampled to
the codec's rate and encoded to EnCodec codes once, so training reads tokens and never audio.

Captions, in this order (audiocraft's conventions first):
- a sidecar `<stem>.txt` (the caption as text) or `<stem>.json` (audiocraft's: `description`, else
  `caption` or `text`) beside the audio file;
- a line of a `metadata.jsonl` anywhere in the upload: `{"file_name" | "file" | "path" | "audio":
  ..., "text" | "caption" | "description": ...}` (Hugging Face's audiofolder and audiocraft's);
- the dataset's default caption (may be empty: the file then trains the unconditional model).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lib.errors import Invalid
from lib.files import DATA_DIR, space_errors
from lib.finetune import AUDIO_SUFFIXES, MAX_FILE_S, MIN_FILE_S, CodecShape, DatasetFile, DatasetInfo, DatasetJob
from server.audio.decode import read_audio, to_channels
from server.audio.errors import AudioInputError
from server.audio.resample import resample
from server.engine.chroma import SAMPLE_RATE as CHROMA_RATE
from server.engine.chroma import chroma
from server.engine.decode import audio_to_codes
from server.finetune import store
from server.models.loaded import TextToAudioLM

log = logging.getLogger("audiocraft.finetune")

MIN_INPUT_RATE = 16000  # below it the codec's upper bands would be learnt as silence
MIN_WINDOW_S = MIN_FILE_S  # a file's last piece shorter than this is dropped (unless it is the whole file)
_CAPTION_KEYS = ("description", "caption", "text")
_FILE_KEYS = ("file_name", "file", "path", "audio")
MAX_ZIP_ENTRIES = 10_000


class NoUsableFile(Invalid):
    code = "dataset_empty"


@dataclass(frozen=True)
class Source:
    path: Path
    name: str  # as the uploader named it (relative path inside a ZIP)
    caption: str
    caption_from: str


def unpack(upload_dir: Path, into: Path) -> Path:
    """The uploads as one folder: plain files copied by name, ZIP archives extracted (no absolute
    paths, no '..'). Returns `into`."""
    for item in sorted(upload_dir.iterdir()):
        if item.suffix.lower() == ".zip" and zipfile.is_zipfile(item):
            with zipfile.ZipFile(item) as archive:
                names = archive.namelist()
                if len(names) > MAX_ZIP_ENTRIES:
                    raise Invalid(f"{item.name} holds {len(names)} entries; at most {MAX_ZIP_ENTRIES}", field="files")
                for name in names:
                    parts = Path(name).parts
                    if name.startswith("/") or ".." in parts:
                        raise Invalid(f"{item.name} holds an unsafe path: {name}", field="files")
                    if name.endswith("/") or parts[0] == "__MACOSX":
                        continue
                    target = into / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as src, open(target, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
        else:
            (into / _original_name(item)).write_bytes(item.read_bytes())
    return into


def _original_name(item: Path) -> str:
    """Uploads are kept as `<n>-<name>` (server/serving/datasets.py): the name without its number."""
    head, _, rest = item.name.partition("-")
    return rest if head.isdigit() and rest else item.name


def _metadata(folder: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    for meta in sorted(folder.rglob("metadata.jsonl")):
        for line in meta.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            file = next((row[k] for k in _FILE_KEYS if isinstance(row.get(k), str)), None)
            text = next((row[k] for k in _CAPTION_KEYS if isinstance(row.get(k), str)), None)
            if file and text is not None:
                key = (meta.parent / file).relative_to(folder).as_posix() if not Path(file).is_absolute() else file
                captions[key] = text
                captions.setdefault(Path(file).name, text)
    return captions


def _sidecar(audio: Path) -> tuple[str, str] | None:
    txt, js = audio.with_suffix(".txt"), audio.with_suffix(".json")
    if txt.is_file():
        return txt.read_text(errors="replace").strip(), "sidecar-txt"
    if js.is_file():
        try:
            row = json.loads(js.read_text(errors="replace"))
        except ValueError:
            return None
        if isinstance(row, dict):
            text = next((row[k] for k in _CAPTION_KEYS if isinstance(row.get(k), str)), None)
            if text is not None:
                return text.strip(), "sidecar-json"
    return None


def sources(folder: Path, default_caption: str) -> list[Source]:
    """Every audio file under `folder` with its caption, in name order."""
    meta = _metadata(folder)
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        rel = path.relative_to(folder).as_posix()
        side = _sidecar(path)
        if side is not None:
            caption, origin = side
        elif rel in meta or path.name in meta:
            caption, origin = meta.get(rel, meta.get(path.name, "")), "metadata.jsonl"
        elif default_caption:
            caption, origin = default_caption, "default"
        else:
            caption, origin = "", "none"
        found.append(Source(path, rel, caption, origin))
    return found


def _windows(n_samples: int, rate: int, window_s: float) -> list[tuple[int, int]]:
    """(start, length) in samples: whole windows, then the rest if it is at least MIN_WINDOW_S (or
    the whole file)."""
    size = int(window_s * rate)
    out = [(s, min(size, n_samples - s)) for s in range(0, n_samples, size)]
    if len(out) > 1 and out[-1][1] < MIN_WINDOW_S * rate:
        out.pop()
    return out


def window_chroma(piece: torch.Tensor) -> torch.Tensor:
    """The window's pitch class per chroma frame (int8 [frames]), of its mono mix, as the engine takes
    a melody's (server/engine/chroma.py): a melody model learns from it what it is later given."""
    return chroma(piece.float().mean(dim=0)).argmax(dim=-1).to(torch.int8)


def build(
    lm: TextToAudioLM,
    job: DatasetJob,
    folder: Path,
    data_dir: Path,
    job_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """Build the dataset `job.name` from the files in `folder` with `lm`'s codec; NoUsableFile (422)
    with each file's reason when none can be used; DatasetExists when the name is taken."""
    if store.exists(data_dir, job.name):
        raise store.DatasetExists(job.name)
    spec = lm.spec
    model_window = spec.window_s or 30.0
    window_s = min(job.window_s or model_window, model_window)
    rate, channels, hop = lm.sample_rate, lm.channels, round(lm.sample_rate / lm.frame_rate_hz)
    # A 32 kHz codec's dataset keeps each window's chroma too: a MusicGen-Melody base trains on it
    # (MusicGen and Melody share the codec, so one dataset serves both).
    with_chroma = rate == CHROMA_RATE
    found = sources(folder, job.caption)
    if not found:
        raise NoUsableFile(
            "the upload holds no audio file",
            field="files",
            hint=f"send audio files ({', '.join(AUDIO_SUFFIXES)}), or a ZIP of them",
        )
    report: list[DatasetFile] = []
    tensors: dict[str, torch.Tensor] = {}
    windows: list[dict] = []
    for i, src in enumerate(found):
        if progress is not None:
            progress(i, len(found))
        entry = DatasetFile(file=src.name, status="skipped", caption=src.caption, caption_from=src.caption_from)
        report.append(entry)
        try:
            with open(src.path, "rb") as f:
                audio, source_rate = read_audio(f, src.name, max_duration_s=MAX_FILE_S)
        except AudioInputError as exc:
            entry.reason = exc.message
            continue
        entry.sample_rate, entry.channels = source_rate, int(audio.shape[0])
        entry.duration_s = round(audio.shape[1] / source_rate, 3)
        if entry.duration_s < MIN_FILE_S:
            entry.reason = f"{entry.duration_s:g} s long; files must be at least {MIN_FILE_S:g} s"
            continue
        if source_rate < MIN_INPUT_RATE:
            entry.reason = f"sampled at {source_rate} Hz; at least {MIN_INPUT_RATE} Hz is needed"
            continue
        audio = resample(to_channels(audio, channels), source_rate, rate)
        for start, length in _windows(audio.shape[1], rate, window_s):
            length = (length // hop) * hop  # whole codec frames
            piece = torch.from_numpy(np.ascontiguousarray(audio[:, start : start + length]))
            codes = audio_to_codes(lm, piece).to(torch.int16).cpu()
            if with_chroma:
                tensors[f"c{len(windows)}"] = window_chroma(piece)
            tensors[f"w{len(windows)}"] = codes.contiguous()
            windows.append(
                {
                    "file": src.name,
                    "start_s": round(start / rate, 3),
                    "frames": int(codes.shape[1]),
                    "caption": src.caption,
                }
            )
            entry.windows += 1
        entry.status, entry.reason = "ok", None
    if not windows:
        problems = "; ".join(f"{e.file}: {e.reason}" for e in report)
        raise NoUsableFile(f"no usable file in the upload ({problems})", field="files", hint="fix or replace them")
    info = DatasetInfo(
        name=job.name,
        model=spec.name,
        codec=CodecShape(
            sample_rate=rate,
            channels=channels,
            codebooks=lm.num_codebooks,
            codebook_size=int(lm.decoder_config.vocab_size),
            frame_rate_hz=lm.frame_rate_hz,
        ),
        window_s=window_s,
        windows=len(windows),
        duration_s=round(sum(w["frames"] for w in windows) / lm.frame_rate_hz, 3),
        created_at=time.time(),
        files=report,
        job=job_id,
        chroma=with_chroma,
    )
    with space_errors(DATA_DIR):
        built = store.staging(data_dir)
        try:
            save_file(tensors, str(built / store.CODES))
            manifest = info.model_dump(mode="json") | {"window_list": windows}
            (built / store.MANIFEST).write_text(json.dumps(manifest, indent=1))
            store.install(data_dir, built, job.name)
        finally:
            if built.exists():
                shutil.rmtree(built, ignore_errors=True)
    used = sum(e.status == "ok" for e in report)
    log.info("dataset %s: %d windows from %d of %d files", job.name, len(windows), used, len(report))
    return info

