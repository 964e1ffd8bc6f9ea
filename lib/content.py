"""The content store: audio assets and generation presets kept under `<data_dir>/content`.

Shared by the CLI (`resource-audiocraft content ...`) and the server (which resolves assets by name,
e.g. a melody or a continuation prompt). Light on purpose: stdlib and pydantic only.

Layout::

    content/
      index.json        every item, written atomically (temp file + rename) under a lock
      .lock             flock(2) target serialising read-modify-write of the index
      audio/<name>.<ext>
      presets/<name>.json

A preset is a saved generation request: a JSON object with the request's fields (prompt, duration,
model, seed, ...) plus ``"type"`` (music, sound, melody, continuation or mix; music when absent). The
nested form ``{"type": "music", "request": {...}}`` is accepted too and flattened. A mix preset's
``"tracks"`` are `--track` specs (strings) or POST /api/mix tracks whose audio is a ``content`` name,
a ``file`` path or a ``job`` id (cli/mix.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from lib.errors import Invalid
from lib.files import copy_atomic, reason, write_atomic

ContentType = Literal["audio", "preset"]
CONTENT_TYPES: tuple[str, ...] = ("audio", "preset")
PRESET_KINDS: tuple[str, ...] = ("music", "sound", "melody", "continuation", "mix")
INDEX_VERSION = 1

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the whole name (fullmatch): no trailing newline

MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "aiff": "audio/aiff",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
    "ecdc": "application/octet-stream",
}


class ContentError(Invalid):
    """Base class; `hint` says what to do next."""

    code = "invalid_content"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


class ContentExists(ContentError):
    status = 409
    code = "content_exists"


class ContentNotFound(ContentError):
    status = 404
    code = "content_not_found"


class InvalidContent(ContentError):
    pass


class NotExecutable(ContentError):
    code = "not_executable"


class ContentItem(BaseModel):
    name: str
    type: ContentType
    path: str = Field(..., description="File path relative to the content root")
    format: str = Field(..., description="wav, flac, mp3, ogg, ... or json for presets")
    media_type: str
    size_bytes: int
    sha256: str
    created_at: str = Field(..., description="ISO 8601, UTC")
    source: str = Field("file", description="file (added by a user), generated, or preset:<name>")
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Helpers


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))


def sanitize_name(raw: str) -> str:
    """A valid content name derived from arbitrary text (a file stem, a prompt)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw.strip()).strip("-._")
    return (name or "item")[:128]


def sniff_audio_format(head: bytes) -> str | None:
    """The container of an audio file from its first bytes, or None when it does not look like audio."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def wav_info(path: Path) -> dict[str, Any] | None:
    """sample_rate, channels, duration_s of a RIFF/WAVE file (PCM or float), without decoding it."""
    try:
        with open(path, "rb") as f:
            riff = f.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            rate = channels = block_align = None
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                cid, size = header[:4], struct.unpack("<I", header[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size)
                    _tag, channels, rate, _bps, block_align = struct.unpack("<HHIIH", fmt[:14])
                    if size % 2:
                        f.seek(1, os.SEEK_CUR)
                elif cid == b"data":
                    if not (rate and block_align):
                        return None
                    if size in (0, 0xFFFFFFFF):  # streamed WAV: size unknown; use the file length
                        size = path.stat().st_size - f.tell()
                    frames = size // block_align
                    return {"sample_rate": rate, "channels": channels, "duration_s": round(frames / rate, 4)}
                else:
                    f.seek(size + (size % 2), os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_preset(data: Any) -> dict[str, Any]:
    """A preset as one flat request dict with "type"; raises InvalidContent when it is not one."""
    if not isinstance(data, dict):
        raise InvalidContent(
            "a preset must be a JSON object", 'e.g. {"type": "music", "prompt": "calm piano"}'
        )
    data = dict(data)
    kind = data.pop("type", None) or data.pop("kind", None) or "music"
    if isinstance(data.get("request"), dict):
        nested = data.pop("request")
        data = {**nested, **{k: v for k, v in data.items() if k not in nested}}
    if kind not in PRESET_KINDS:
        raise InvalidContent(
            f"preset type {kind!r} is not one of {', '.join(PRESET_KINDS)}", 'set "type" to music or sound'
        )
    tracks = data.get("tracks")
    if kind == "mix" and not (isinstance(tracks, list) and tracks):
        raise InvalidContent(
            'a mix preset needs "tracks": a non-empty list',
            'e.g. {"type": "mix", "tracks": ["rain@0:-6dB,loop", {"content": "thunder", "offset_s": 2.5}]}',
        )
    prompt = data.get("prompt")
    if kind in ("music", "sound") and not (isinstance(prompt, str) and prompt.strip()):
        raise InvalidContent('a music or sound preset needs a non-empty "prompt"')
    if "duration" in data and not (isinstance(data["duration"], int | float) and data["duration"] > 0):
        raise InvalidContent('preset "duration" must be a positive number of seconds')
    return {"type": kind, **data}


# --------------------------------------------------------------------------------------------------
# The store


class ContentStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> ContentStore:
        return cls(Path(data_dir) / "content")

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    # -- locking and the index -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, ContentItem]:
        try:
            raw = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ContentError(
                f"the content index ({self.index_path.name} in the content store) is unreadable: {reason(e)}",
                "restore it from a backup or move it aside to start an empty index",
            ) from None
        items = raw.get("items", {}) if isinstance(raw, dict) else {}
        return {name: ContentItem.model_validate(item) for name, item in items.items()}

    def _write_index(self, items: dict[str, ContentItem]) -> None:
        body = {
            "version": INDEX_VERSION,
            "items": {n: items[n].model_dump(mode="json") for n in sorted(items)},
        }
        write_atomic(self.index_path, (json.dumps(body, indent=2) + "\n").encode())

    # -- queries ---------------------------------------------------------------------------------

    def list(self, pattern: str | None = None, type: str | None = None) -> list[ContentItem]:
        items = sorted(self._read_index().values(), key=lambda i: (i.created_at, i.name))
        if type:
            items = [i for i in items if i.type == type]
        if pattern:
            items = [i for i in items if _matches(i, pattern)]
        return items

    def get(self, name: str) -> ContentItem:
        item = self._read_index().get(name)
        if item is None:
            raise ContentNotFound(f"no content named {name!r}", "see `resource-audiocraft content list`")
        return item

    def exists(self, name: str) -> bool:
        return name in self._read_index()

    def path_of(self, name: str) -> Path:
        """The stored file of an item; the server uses this to resolve assets by name."""
        item = self.get(name)
        path = self.root / item.path
        if not path.is_file():
            raise ContentNotFound(
                f"content {name!r} is indexed but its file ({item.path} in the content store) is missing",
                f"remove it with `resource-audiocraft content remove --name {name} --force`",
            )
        return path

    def resolve_audio(self, name: str) -> Path:
        item = self.get(name)
        if item.type != "audio":
            raise InvalidContent(f"content {name!r} is a {item.type}, not audio")
        return self.path_of(name)

    def load_preset(self, name: str) -> dict[str, Any]:
        item = self.get(name)
        if item.type != "preset":
            raise NotExecutable(
                f"content {name!r} is {item.type}, not a preset: only presets can be executed",
                "add one with `resource-audiocraft content add --type preset --file preset.json`",
            )
        try:
            return normalize_preset(json.loads(self.path_of(name).read_text()))
        except ValueError as e:
            raise NotExecutable(f"preset {name!r} is not valid JSON: {e}") from None
        except InvalidContent as e:
            raise NotExecutable(f"preset {name!r} is not executable: {e.message}", e.hint) from None

    # -- changes ---------------------------------------------------------------------------------

    def add_file(
        self,
        src: Path,
        name: str | None = None,
        type: str | None = None,
        source: str = "file",
        metadata: dict[str, Any] | None = None,
    ) -> ContentItem:
        """Copy `src` into the store. The type is inferred (JSON: preset; audio by its bytes) unless given."""
        src = Path(src)
        if not src.is_file():
            raise InvalidContent(f"file not found: {src}", "pass an existing file with --file")
        name = name if name is not None else sanitize_name(src.stem)
        if not valid_name(name):
            raise InvalidContent(
                f"invalid name {name!r}", "use letters, digits, '.', '_' and '-' (up to 128 characters)"
            )
        if type is not None and type not in CONTENT_TYPES:
            raise InvalidContent(f"invalid type {type!r}", f"use one of: {', '.join(CONTENT_TYPES)}")
        with open(src, "rb") as f:
            head = f.read(16)
        audio_format = sniff_audio_format(head)
        if type is None:
            if audio_format:
                type = "audio"
            elif src.suffix.lower() == ".json" or head.lstrip()[:1] == b"{":
                type = "preset"
            else:
                raise InvalidContent(
                    f"{src} is neither audio (wav, flac, mp3, ogg) nor a JSON preset",
                    "pass --type audio or --type preset",
                )

        info: dict[str, Any] = {}
        if type == "audio":
            if audio_format is None:
                ext = src.suffix.lower().lstrip(".")
                if ext not in MEDIA_TYPES:
                    raise InvalidContent(
                        f"{src} does not look like an audio file", "supported: wav, flac, mp3, ogg, aiff, m4a"
                    )
                audio_format = ext
            fmt = audio_format
            rel = f"audio/{name}.{fmt}"
            if fmt == "wav":
                info = wav_info(src) or {}
        else:
            try:
                normalize_preset(json.loads(src.read_text()))
            except (ValueError, UnicodeDecodeError) as e:
                raise InvalidContent(f"{src} is not valid JSON: {e}", "a preset is a JSON object") from None
            fmt = "json"
            rel = f"presets/{name}.json"

        with self._locked():
            items = self._read_index()
            if name in items:
                raise ContentExists(
                    f"content {name!r} already exists",
                    "choose another --name, or remove it first with `content remove`",
                )
            target = self.root / rel
            copy_atomic(src, target)
            item = ContentItem(
                name=name,
                type=type,  # type: ignore[arg-type]
                path=rel,
                format=fmt,
                media_type=MEDIA_TYPES.get(fmt, "application/json"),
                size_bytes=target.stat().st_size,
                sha256=_sha256(target),
                created_at=_now_iso(),
                source=source,
                metadata=metadata or {},
                **info,
            )
            items[name] = item
            self._write_index(items)
            return item

    def add_bytes(
        self,
        data: bytes,
        name: str,
        type: str = "audio",
        source: str = "generated",
        metadata: dict[str, Any] | None = None,
        suffix: str = "",
    ) -> ContentItem:
        """Store in-memory bytes (a generated result) as content."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=suffix, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.add_file(Path(tmp), name=name, type=type, source=source, metadata=metadata)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def remove(self, name: str) -> ContentItem:
        with self._locked():
            items = self._read_index()
            item = items.pop(name, None)
            if item is None:
                raise ContentNotFound(f"no content named {name!r}", "see `resource-audiocraft content list`")
            self._write_index(items)
        with contextlib.suppress(FileNotFoundError):
            (self.root / item.path).unlink()
        return item

    def unique_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`, ... whichever is free."""
        base = sanitize_name(base)
        items = self._read_index()
        if base not in items:
            return base
        for i in range(2, 10_000):
            candidate = f"{base[:120]}-{i}"
            if candidate not in items:
                return candidate
        return f"{base[:100]}-{int(time.time())}"


def _matches(item: ContentItem, pattern: str) -> bool:
    if pattern == item.type:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(item.name.lower(), pattern.lower())
    return pattern.lower() in item.name.lower()
