"""Downloading a model's repos from the Hugging Face hub into the hub cache.

It goes through huggingface_hub (its URLs, headers, tokens, HEAD metadata and resumable GET) but
decides itself what is fetched and when it counts as installed:

- only the files the engine needs (`needed_files`): e.g. model.safetensors, never the audiocraft
  copies or pytorch_model.bin that the same repos also hold;
- each file is fetched into `<hub_cache>/.audiocraft-partial/<repo folder>/<etag>.part`, which
  survives an interruption: the next attempt asks for the rest with a Range request. A connection
  cut mid-file is resumed at once, in the same call (huggingface_hub's http_get retries);
- each file is checked against the hub's size and hash (sha256 for LFS files, which is their etag;
  the git blob sha1 for small files). A mismatch deletes the file and fails the download;
- the checked files are installed by the hub cache's one writer (server/hub/snapshot.py): blobs,
  the snapshot's links, and refs/main last, so a repo is never seen half-written;
- the plain HTTP path is always used (never hf_xet): it is the one that resumes and that we hash.

Nothing here knows about jobs or HTTP; `progress` and `cancelled` connect it to a job.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.catalogue import ModelSpec
from lib.errors import Unavailable
from lib.files import MODELS_DIR, disk_full, no_space
from server.hub import snapshot, store
from server.hub.snapshot import HubFile

# Files a transformers-format repo needs besides its weights (those present are fetched).
_TRANSFORMERS_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
)
_SHARD = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")

Progress = Callable[[int, int, str], None]  # (bytes done, bytes total, current file)


class DownloadFailed(Unavailable):
    """The hub could not be reached, refused, or sent something that does not check out."""

    code = "download_failed"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)


class DownloadCancelled(Exception):
    pass


@dataclass(frozen=True)
class RepoPlan:
    repo: str
    commit: str
    files: tuple[HubFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def needed_files(filenames: list[str], hub_format: str) -> list[str]:
    """The files the engine loads, out of a repo's listing (the allow list for one format)."""
    names = set(filenames)
    if hub_format == "audiocraft":
        return sorted(n for n in ("state_dict.bin", "compression_state_dict.bin") if n in names)
    if hub_format == "audioseal":
        return sorted(n for n in (*store.AUDIOSEAL_FILES, store.AUDIOSEAL_CONFIG) if n in names)
    if hub_format == "mbd":  # only the MusicGen checkpoint of the repo's four
        return sorted(n for n in store.MBD_FILES if n in names)
    if hub_format == "adapter":  # a fine-tuned model (server/hub/finetuned.py)
        return sorted(n for n in (*store.ADAPTER_FILES, "README.md") if n in names)
    if hub_format == "demucs":
        from server.hub import demucs_layout

        return demucs_layout.needed_files(names)
    if hub_format != "transformers":
        raise ValueError(f"unknown hub format: {hub_format!r}")
    wanted = [n for n in _TRANSFORMERS_SIDE_FILES if n in names]
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if single in names:
            return sorted(wanted + [single])
        if index in names:
            suffix = single.rsplit(".", 1)[1]
            shards = [n for n in names if _SHARD.match(n) and n.endswith(suffix) and n.startswith(single.split(".")[0])]
            return sorted(wanted + [index] + shards)
    return sorted(wanted)  # no weights at all: the store will not count it as installed


_OFFLINE_HINT = "check the network (or HF_ENDPOINT); offline, copy the model and run: resource-audiocraft models import"


def _hub_error(repo: str, exc: Exception, endpoint: str | None) -> DownloadFailed:
    """Any failure of the hub's API as one plain message that says what to do."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    where = endpoint or constants.ENDPOINT
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadFailed(
            f"cannot download {repo}: offline mode is on (HF_HUB_OFFLINE=1)",
            hint="unset HF_HUB_OFFLINE, or copy the model here and run: resource-audiocraft models import DIR",
        )
    if isinstance(exc, httpx2.TimeoutException):
        return DownloadFailed(
            f"cannot download {repo}: the hub at {where} did not answer in time",
            hint=_OFFLINE_HINT,
        )
    if isinstance(exc, httpx2.TransportError):
        return DownloadFailed(
            f"cannot download {repo}: no connection to the hub at {where} ({type(exc).__name__})",
            hint=_OFFLINE_HINT,
        )
    if isinstance(exc, GatedRepoError):
        return DownloadFailed(f"{repo} is gated on the hub", hint="accept its terms on the hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadFailed(f"the hub at {where} has no repo {repo}", hint="check HF_ENDPOINT and HF_TOKEN")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return DownloadFailed(f"the hub at {where} answered {status} for {repo}", hint="try again later")
    return DownloadFailed(f"cannot download {repo}: {exc}")


def plan_repo(repo: str, hub_format: str, endpoint: str | None, timeout_s: float) -> RepoPlan:
    """Ask the hub which commit `main` is and the sizes and hashes of the files the engine needs."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo, revision="main", files_metadata=True, timeout=timeout_s)
    except Exception as exc:
        raise _hub_error(repo, exc, endpoint) from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = []
    for name in needed_files(list(siblings), hub_format):
        s = siblings[name]
        if s.lfs is not None:
            files.append(HubFile(name, int(s.lfs.size), s.lfs.sha256, lfs=True))
        elif s.size is not None and s.blob_id:
            files.append(HubFile(name, int(s.size), s.blob_id, lfs=False))
        else:
            raise DownloadFailed(f"the hub gave no size or hash for {repo}/{name}", hint="check HF_ENDPOINT")
    if not info.sha or not files:
        raise DownloadFailed(f"{repo} on the hub holds none of the files the engine needs", hint="check HF_ENDPOINT")
    return RepoPlan(repo=repo, commit=info.sha, files=tuple(files))


class _Bytes:
    """A progress-bar stand-in for huggingface_hub's http_get: forwards byte counts."""

    def __init__(self, on_bytes: Callable[[int], None], **_kwargs):
        self._on_bytes = on_bytes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int | float | None = 1) -> None:
        self._on_bytes(int(n or 0))


def _fetch_file(
    plan: RepoPlan,
    f: HubFile,
    part: Path,
    endpoint: str | None,
    timeout_s: float,
    on_bytes: Callable[[int], None],
    cancelled: threading.Event,
) -> None:
    """GET one file into `part`, resuming from what is there; checks size and hash."""
    from urllib.parse import quote

    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.file_download import http_get

    # The hub's file URL (hf_hub_url's, built from the endpoint given rather than the one read at import).
    url = f"{(endpoint or constants.ENDPOINT).rstrip('/')}/{plan.repo}/resolve/{plan.commit}/{quote(f.name)}"
    try:
        meta = get_hf_file_metadata(url, timeout=timeout_s, endpoint=endpoint)
    except Exception as exc:
        raise _hub_error(plan.repo, exc, endpoint) from None
    if meta.etag != f.etag or (meta.size is not None and meta.size != f.size):
        raise DownloadFailed(
            f"the hub disagrees with itself about {plan.repo}/{f.name} (etag {meta.etag} vs {f.etag})",
            hint="try again; the repo may be changing",
        )
    have = part.stat().st_size if part.exists() else 0
    if have > f.size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    on_bytes(have)

    def counted(n: int) -> None:
        if cancelled.is_set():
            raise DownloadCancelled()
        on_bytes(n)

    if have < f.size:
        # Without X-Linked-* headers the GET goes to the resolve URL (it redirects to the CDN itself).
        location = meta.location if meta.location else url
        with open(part, "ab") as out:
            try:
                http_get(
                    location,
                    out,
                    resume_size=have,
                    expected_size=f.size,
                    displayed_filename=f.name,
                    tqdm_class=lambda **kw: _Bytes(counted, **kw),  # type: ignore[arg-type]
                )
            except DownloadCancelled:
                raise
            except OSError as exc:
                if disk_full(exc):  # the part stays: the download resumes from it once there is room
                    raise no_space(MODELS_DIR) from None
                # "Consistency check failed": the size is wrong
                part.unlink(missing_ok=True)
                reason = str(exc).splitlines()[0]
                raise DownloadFailed(
                    f"{plan.repo}/{f.name} came out the wrong size from the hub; it was deleted ({reason})",
                    hint="try again",
                ) from None
            except Exception as exc:
                raise _hub_error(plan.repo, exc, endpoint) from None
    if part.stat().st_size != f.size or snapshot.file_etag(part, f.lfs) != f.etag:
        part.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{plan.repo}/{f.name} does not match the hub's {'sha256' if f.lfs else 'hash'} {f.etag}; it was deleted",
            hint="try again; if it happens again the hub or a proxy is serving damaged files",
        )
    os.replace(part, part.with_suffix(".ok"))


def _reusable_blob(f: HubFile, repo: str, hub_cache: Path) -> Path | None:
    blob = store.repo_folder(repo, hub_cache) / "blobs" / f.etag
    return blob if blob.is_file() and blob.stat().st_size == f.size else None


def download_repos(
    plans: list[RepoPlan],
    hub_cache: Path,
    endpoint: str | None = None,
    timeout_s: float = 10.0,
    progress: Progress | None = None,
    cancelled: threading.Event | None = None,
) -> list[Path]:
    """Fetch every planned file (resuming partial ones), check it, then install repo by repo."""
    from filelock import FileLock

    cancelled = cancelled or threading.Event()
    total = sum(p.total_bytes for p in plans)
    done = 0
    lock = threading.Lock()

    def report(name: str, n: int) -> None:
        nonlocal done
        with lock:
            done += n
        if progress is not None:
            progress(done, total, name)

    snapshots = []
    for plan in plans:
        partial = store.partial_folder(plan.repo, hub_cache)
        partial.mkdir(parents=True, exist_ok=True)
        # Another process (the CLI pulling while the server is down) may download the same repo.
        with FileLock(str(partial) + ".lock"):
            checked: dict[str, Path] = {}
            for f in plan.files:
                if cancelled.is_set():
                    raise DownloadCancelled()
                ok = partial / f"{f.etag}.ok"
                if _reusable_blob(f, plan.repo, hub_cache) is not None:
                    report(f.name, f.size)
                    continue
                if not ok.is_file() or ok.stat().st_size != f.size:
                    part = partial / f"{f.etag}.part"
                    _fetch_file(plan, f, part, endpoint, timeout_s, lambda n, f=f: report(f.name, n), cancelled)
                else:
                    report(f.name, f.size)
                checked[f.name] = ok
            snapshots.append(snapshot.install(plan.repo, plan.commit, plan.files, checked, hub_cache))
            shutil.rmtree(partial, ignore_errors=True)
    return snapshots


def plan_model(spec: ModelSpec, endpoint: str | None = None, timeout_s: float = 10.0) -> list[RepoPlan]:
    """The model's own repo and the extra repos it needs (AudioGen's T5)."""
    plans = [plan_repo(spec.repo, spec.hub_format, endpoint, timeout_s)]
    plans += [plan_repo(repo, "transformers", endpoint, timeout_s) for repo in spec.extra_repos]
    return plans


def download_model(
    spec: ModelSpec,
    hub_cache: Path,
    endpoint: str | None = None,
    timeout_s: float = 10.0,
    progress: Progress | None = None,
    cancelled: threading.Event | None = None,
) -> Path:
    """Download what `spec` needs into hub_cache; returns its snapshot folder."""
    from huggingface_hub import constants

    if offline():
        raise _hub_error(spec.repo, _offline_error(), endpoint)
    check_writable(hub_cache)
    # Explicit from here on: huggingface_hub builds some URLs from the endpoint it read at import.
    endpoint = endpoint or constants.ENDPOINT
    plans = plan_model(spec, endpoint, timeout_s)
    return download_repos(plans, Path(hub_cache), endpoint, timeout_s, progress, cancelled)[0]


def check_writable(hub_cache: Path) -> None:
    """DownloadFailed at once when the hub cache cannot be written (a read-only mount)."""
    folder = Path(hub_cache)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise DownloadFailed(
            f"{MODELS_DIR} is read-only: nothing can be downloaded into it",
            hint="download where it is writable (e.g. on the host: resource-audiocraft models pull), "
            "or copy the model and run: resource-audiocraft models import",
        )


def offline() -> bool:
    """huggingface_hub's offline mode (HF_HUB_OFFLINE=1): no download is even tried."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _offline_error() -> Exception:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("HF_HUB_OFFLINE=1")

