"""Air-gapped install: a model copied from another machine, checked and put into the hub cache.

Accepted sources, as a folder or a .tar(.gz/.bz2/.xz)/.tgz/.zip archive of one:
- a hub cache (folders models--org--name, each with refs/main and snapshots/), or one such folder;
- a snapshot folder: the repo's files themselves (config.json, model.safetensors, tokenizer...);
- an audiocraft export: state_dict.bin + compression_state_dict.bin (AudioGen's format);
- a demucs model (htdemucs): a folder with its bag <name>.yaml and <sig>.safetensors or
  <sig>-<sha>.th files, or the one legacy checkpoint file <sig>-<sha>.th itself
  (server/hub/demucs_layout.py).

Only the files the engine needs are taken (the same allow list as downloads). They are checked
(config.json is JSON of the right model_type; safetensors headers parse; .bin files are torch
archives), hashed the way the hub names blobs, and installed by the hub cache's one writer
(server/hub/snapshot.py), refs/main last.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lib.catalogue import CATALOGUE, ModelSpec, finetuned_repo, get_spec
from lib.errors import Invalid
from lib.finetune import FinetuneFacts, model_name
from server.hub import demucs_layout, download, finetuned, snapshot, store

# model_type in config.json for each kind (and for the extra repos: T5).
_MODEL_TYPES = {"musicgen": "musicgen", "musicgen-melody": "musicgen_melody", "encodec": "encodec"}
# Extra repos that are not a T5: MusicGen-Style's feature extractor (its config is a MERTConfig).
_EXTRA_MODEL_TYPES = {"m-a-p/MERT-v1-95M": "mert_model"}


class ImportFailed(Invalid, ValueError):
    """The source is not a model this service can use; the message says why."""

    code = "import_failed"


@dataclass(frozen=True)
class Imported:
    repo: str
    commit: str
    snapshot: Path
    files: tuple[str, ...]
    size_bytes: int


def _extract(archive: Path, into: Path) -> Path:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise ImportFailed(f"{archive} holds an unsafe path: {name}")
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            try:
                t.extractall(into, filter="data")  # refuses absolute paths, .. and links leaving the folder
            except tarfile.FilterError as exc:
                raise ImportFailed(f"{archive} holds an unsafe entry: {exc}") from None
    else:
        raise ImportFailed(f"{archive} is neither a folder nor a tar or zip archive")
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def _repo_of_folder(folder: Path) -> str | None:
    """org/name for a hub cache folder models--org--name."""
    parts = folder.name.split("--")
    if len(parts) >= 3 and parts[0] == "models":
        return f"{parts[1]}/{'--'.join(parts[2:])}"
    return None


def _hub_snapshot(folder: Path) -> tuple[Path, str] | None:
    """(snapshot folder, commit) of a hub cache repo folder."""
    try:
        commit = (folder / "refs" / "main").read_text().strip()
    except OSError:
        snapshots = sorted((folder / "snapshots").glob("*")) if (folder / "snapshots").is_dir() else []
        if len(snapshots) != 1:
            return None
        commit = snapshots[0].name
    snapshot = folder / "snapshots" / commit
    return (snapshot, commit) if snapshot.is_dir() else None


def _finetuned_base(repo: str) -> ModelSpec | None:
    """The catalogue base of a fine-tuned model's repo (finetuned/<base>.<label>), else None."""
    org, _, rest = repo.partition("/")
    base, dot, label = rest.partition(".")
    if org != finetuned.ORG or not dot or base not in CATALOGUE:
        return None
    try:
        model_name(base, label)
    except ValueError:
        return None
    return CATALOGUE[base]


def _hub_format_of(repo: str) -> str:
    if _finetuned_base(repo) is not None:
        return "adapter"
    for spec in CATALOGUE.values():
        if spec.repo == repo:
            return spec.hub_format
    return "transformers"  # extra repos (T5)


def _known_repos() -> dict[str, ModelSpec | None]:
    repos: dict[str, ModelSpec | None] = {}
    for spec in CATALOGUE.values():
        repos[spec.repo] = spec
        for extra in spec.extra_repos:
            repos.setdefault(extra, None)
    return repos


def _check_safetensors(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ImportFailed(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        if n > size - 8:
            raise ImportFailed(f"{path.name} is damaged: its header claims {n} bytes, the file has {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise ImportFailed(f"{path.name} is damaged: its header is not JSON") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ImportFailed(f"{path.name} is truncated or damaged: {8 + n + end} bytes expected, {size} found")


def _check_demucs_pickle(path: Path) -> None:
    """demucs names its checkpoints <sig>-<first 8 hex digits of the file's sha256>: the name says
    whether the copy is whole. (Loading checks the rest, strictly.)"""
    sig = demucs_layout.th_signature(path.name)
    if not zipfile.is_zipfile(path):
        raise ImportFailed(f"{path.name} is not a torch checkpoint")
    if sig is not None and sig[1] is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        if digest != sig[1]:
            raise ImportFailed(f"{path.name} is damaged: its sha256 starts {digest}, its name says {sig[1]}")


def _demucs_checkpoint(path: Path, name: str | None, into: Path) -> Path:
    """A lone legacy checkpoint (<sig>-<sha>.th) as a folder: the file and a bag of it alone."""
    spec = get_spec(name) if name else next(s for s in CATALOGUE.values() if s.hub_format == "demucs")
    if spec.hub_format != "demucs":
        raise ImportFailed(f"{path.name} is a demucs checkpoint, not a {spec.name} model")
    sig = demucs_layout.th_signature(path.name)
    assert sig is not None
    shutil.copyfile(path, into / path.name)
    (into / f"{spec.name}.yaml").write_text(f"models: ['{sig[0]}']\n")
    return into


def _check_facts(path: Path, repo: str) -> None:
    """finetune.json: facts this service wrote, for the base its repo names."""
    base = _finetuned_base(repo)
    try:
        facts = FinetuneFacts.model_validate_json(path.read_text())
    except (OSError, ValueError):
        raise ImportFailed(f"{repo}: finetune.json is not the facts of a fine-tuned model") from None
    if base is None or facts.base != base.name:
        raise ImportFailed(
            f"{repo}: the adapter was trained on {facts.base}, not {base.name if base else 'a catalogue model'}; "
            f"import it as {facts.base}+<label>"
        )


def _check_file(path: Path, name: str, repo: str) -> None:
    if name == "finetune.json":
        _check_facts(path, repo)
    elif name == "adapter_config.json":
        try:
            json.loads(path.read_text())
        except (OSError, ValueError):
            raise ImportFailed(f"{repo}: adapter_config.json is not valid JSON") from None
    elif name == "config.json":
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ImportFailed(f"{repo}: config.json is not valid JSON") from None
        spec = _known_repos().get(repo)
        expected = _MODEL_TYPES.get(spec.kind) if spec is not None else _EXTRA_MODEL_TYPES.get(repo, "t5")
        if expected and config.get("model_type") != expected:
            raise ImportFailed(
                f"{repo}: config.json is a {config.get('model_type')!r} model, not {expected!r}; wrong folder?"
            )
    elif name.endswith(".safetensors"):
        _check_safetensors(path)
    elif name.endswith(".th") and demucs_layout.th_signature(name) is not None:
        _check_demucs_pickle(path)  # a legacy demucs checkpoint, named by its signature and checksum
    elif name.endswith((".bin", ".pth", ".th")) and not (zipfile.is_zipfile(path) or path.read_bytes()[:1] == b"\x80"):
        raise ImportFailed(f"{repo}: {name} is not a torch checkpoint")


def _needed(repo: str, files_dir: Path) -> list[str]:
    """The files of `repo` the engine needs, out of files_dir; ImportFailed if the weights are not there."""
    listing = sorted(p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*") if p.is_file())
    hub_format = _hub_format_of(repo)
    names = download.needed_files(listing, hub_format)
    if hub_format == "audiocraft":
        complete = len(names) == 2
    elif hub_format == "demucs":
        complete = demucs_layout.is_complete(files_dir)
    elif hub_format == "adapter":
        complete = set(store.ADAPTER_FILES) <= set(names)
    elif hub_format == "audioseal":
        complete = set(store.AUDIOSEAL_FILES) <= set(names)
    elif hub_format == "mbd":
        complete = set(store.MBD_FILES) <= set(names)
    else:
        complete = "config.json" in names and any(n.endswith((".safetensors", ".bin")) for n in names)
    if not complete:
        raise ImportFailed(f"{files_dir} does not hold a complete {repo}: config.json or the weights are missing")
    return names


def _install(repo: str, files_dir: Path, commit: str | None, hub_cache: Path, staging: Path) -> Imported:
    names = _needed(repo, files_dir)
    checked: dict[str, Path] = {}
    for name in names:
        copy = staging / f"{len(checked)}.{Path(name).name}"
        shutil.copyfile(files_dir / name, copy)  # the source stays as it was
        checked[name] = copy
    files = [snapshot.hub_file(name, copy) for name, copy in checked.items()]
    if commit is None or len(commit) != 40:
        commit = snapshot.commit_for(files)
    installed = snapshot.install(repo, commit, files, checked, hub_cache)
    return Imported(repo, commit, installed, tuple(names), sum(f.size for f in files))


def _holds_bag(root: Path) -> bool:
    """A demucs bag file (other models' folders have a .yaml too: AudioSeal's base.yaml)."""
    path = demucs_layout.bag_file(root)
    if path is None:
        return False
    try:
        demucs_layout.read_bag(path)
    except demucs_layout.BadBag:
        return False
    return True


def _sources(root: Path, name: str | None) -> list[tuple[str, Path, str | None]]:
    """(repo, files folder, commit or None) for each repo found under root."""
    known = _known_repos()
    if _repo_of_folder(root) is not None:
        found = [root]
    else:
        found = sorted(p for p in root.glob("models--*") if p.is_dir())
    if found:
        out = []
        for folder in found:
            repo = _repo_of_folder(folder)
            snap = _hub_snapshot(folder)
            if repo not in known and _finetuned_base(repo) is None:
                raise ImportFailed(f"{folder.name} is not a repo of any catalogue model")
            if snap is None:
                raise ImportFailed(f"{folder} has no snapshot that refs/main points to")
            out.append((repo, snap[0], snap[1]))
        return out
    if (root / "state_dict.bin").is_file() and (root / "compression_state_dict.bin").is_file():
        spec = get_spec(name) if name else next(s for s in CATALOGUE.values() if s.hub_format == "audiocraft")
        if spec.hub_format != "audiocraft":
            raise ImportFailed(
                f"{root} is an audiocraft export; {spec.name} runs from the transformers format: "
                f"copy the hub snapshot of {spec.repo} instead"
            )
        return [(spec.repo, root, None)]
    mbd = next(s for s in CATALOGUE.values() if s.hub_format == "mbd")
    if all((root / f).is_file() for f in store.MBD_FILES) and name in (None, mbd.name, *mbd.aliases):
        return [(mbd.repo, root, None)]  # the files of facebook/multiband-diffusion
    if _holds_bag(root):
        spec = get_spec(name) if name else next(s for s in CATALOGUE.values() if s.hub_format == "demucs")
        if spec.hub_format != "demucs":
            raise ImportFailed(f"{root} holds a demucs model, not {spec.name}")
        return [(spec.repo, root, None)]
    if name is None:
        raise ImportFailed(f"{root} is a plain folder of files: say which model it is with --name")
    if (root / "finetune.json").is_file():  # an adapter's files: the name says which model it becomes
        base, _, label = name.partition("+")
        try:
            return [(finetuned_repo(model_name(base, label)), root, None)]
        except ValueError as exc:
            raise ImportFailed(f"--name {name}: {exc} (a fine-tuned model is named <base>+<label>)") from None
    spec = get_spec(name)
    return [(spec.repo, root, None)]


def import_model(source: Path, hub_cache: Path, name: str | None = None, force: bool = False) -> list[Imported]:
    """Check and install what `source` holds; returns what was installed. ImportFailed when it is
    not usable (nothing is installed then), FileExistsError when it is installed and not `force`."""
    source = Path(source).expanduser()
    if not source.exists():
        raise ImportFailed(f"{source} does not exist")
    hub_cache = Path(hub_cache)
    hub_cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".audiocraft-import-", dir=hub_cache))
    try:
        if source.is_dir():
            root = source
        elif demucs_layout.th_signature(source.name) is not None:
            (work / "unpacked").mkdir()
            root = _demucs_checkpoint(source, name, work / "unpacked")
        else:
            (work / "unpacked").mkdir()
            root = _extract(source, work / "unpacked")
        sources = _sources(root, name)
        for repo, _files, _commit in sources:
            if store.current_revision(repo, hub_cache) is not None and not force:
                raise FileExistsError(f"{repo} is already in {hub_cache}; --force replaces it")
        # Check every repo before installing any, so a bad one leaves nothing behind.
        for repo, files, _commit in sources:
            for n in _needed(repo, files):
                _check_file(files / n, n, repo)
        done = []
        for repo, files, commit in sources:
            staging = work / f"staging-{len(done)}"
            staging.mkdir()
            done.append(_install(repo, files, commit, hub_cache, staging))
        finetuned.refresh(hub_cache)
        return done
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_model(spec: ModelSpec, hub_cache: Path, dest: Path) -> Path:
    """The model's installed snapshot (and its extra repos') as a .tar.gz in the hub cache layout
    (refs/main, snapshots/<commit>/ with the files themselves): what import_model takes on another
    machine. A fine-tuned model is its adapter only: the other machine needs its base too."""
    repos = [spec.repo, *spec.extra_repos]
    for repo in repos:
        if store.current_revision(repo, hub_cache) is None:
            raise store.ModelNotInstalled(spec)
    dest = Path(dest).expanduser()
    partial = dest.with_name(f".{dest.name}.partial")
    with tarfile.open(partial, "w:gz") as tar:
        for repo in repos:
            folder = store.repo_folder(repo, hub_cache)
            commit = store.current_revision(repo, hub_cache)
            ref = folder / "refs" / "main"
            tar.add(ref, f"{folder.name}/refs/main")
            snap = folder / "snapshots" / str(commit)
            for path in sorted(p for p in snap.rglob("*") if p.is_file()):
                arcname = f"{folder.name}/snapshots/{commit}/{path.relative_to(snap).as_posix()}"
                tar.add(path.resolve(), arcname)  # the blob itself, not the link
    partial.replace(dest)
    return dest
