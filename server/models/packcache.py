"""The packed decoder's disk cache: a MusicGen-class model kept beside its snapshot with the decoder
already in the form the engine packs from, so a load reads that and never the float32 checkpoint.

    models--facebook--musicgen-large/
        snapshots/<rev>/model.safetensors, config.json, ...   the original (hub layout)
        converted/<dir>/...                                    AudioGen's converted copy (convert/cache.py)
        packed/<form>/<rev or converted dir>.safetensors       this cache

One file per (source folder, form) holds every tensor of the model: T5 and EnCodec as loaded (weight
norm baked in), the decoder's embeddings and norms in float32, and each of its Linear weights in the
form: "int8" (int8 codes and a `weight_scale` per row, `fastlm.quantize_int8`; int8 and int8-dynamic
share it), "bfloat16" or "float16". float32 has no cache: its checkpoint is already that.

- **What a load still does.** fbgemm's packed int8 layout cannot be saved from torch (it serializes
  a packed weight by unpacking it, and the layout depends on the CPU's ISA), so the int8 codes are
  prepacked again at load (server/engine/fastlm.py): measured in docs/benchmarks.md.
- **Read while the decoder is packed.** Once the header, the metadata and the tensors' names, dtypes
  and shapes are checked, `load` returns the model with its tensors still being read by a thread
  (server/models/streamed.py), and the engine packs each decoder layer as soon as it is in: a cold
  load takes about the longer of the read and the packing, not their sum. The file is laid out in
  the order a load needs it (`load_order`: the decoder first, layer by layer, each module's
  parameters and buffers together), so that read is front to back. A file that fails to read from
  there on (an I/O error, cut short under the reader) fails the load with that said, and is removed,
  so the next load builds it again.
- **Versioned.** The file's metadata names FORMAT_VERSION, the engine's QUANT_VERSION, the form,
  and the source: its folder name (the revision), every file's size, mtime and link target (a hub
  blob's name is its content hash). Any difference, and a file that is not whole or whose tensors
  are not exactly the ones the model's structure expects, is ignored and built again.
- **Written atomically** (a temporary file beside it, renamed over it); two processes loading at
  once take turns on a lock file, and the second reads what the first wrote.
- **Best effort.** A models dir that cannot be written (read-only, full) loads the model without
  the cache, with a warning in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from server.engine import fastlm
from server.models import tensorfile
from server.models.streamed import BackgroundReads, Reads

log = logging.getLogger("audiocraft.engine")

# Bump when what the file holds changes (names, forms, the metadata's meaning) or how it is laid out.
# 2: in load order. A version-1 file (buffers after every parameter) still reads, but a Linear's
# codes and scales lie apart, so its read goes tensor by tensor (server/models/tensorfile.py).
FORMAT_VERSION = 2
_FORMS = {"int8": "int8", "int8-dynamic": "int8", "bfloat16": "bfloat16", "float16": "float16"}
_DENSE = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# Source folders the cache knows how to place: <repo>/<kind>/<name>.
_SOURCE_KINDS = ("snapshots", "converted")


def form_of(precision: str) -> str | None:
    """The stored form for a decoder precision; None: no cache (float32 loads its checkpoint)."""
    return _FORMS.get(precision)


def cache_path(folder: Path, form: str) -> Path | None:
    """Where the cache of a source folder lives; None when the folder is not in a hub repo."""
    folder = Path(folder)
    if folder.parent.name not in _SOURCE_KINDS:
        return None
    return folder.parent.parent / "packed" / form / f"{folder.name}.safetensors"


def source_identity(folder: Path) -> dict[str, list]:
    """Each file of the source folder: [size, mtime_ns, symlink target or ""] (stat follows links)."""
    files: dict[str, list] = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        st = path.stat()
        files[path.name] = [st.st_size, st.st_mtime_ns, os.readlink(path) if path.is_symlink() else ""]
    return files


def expected_metadata(folder: Path, form: str) -> dict[str, str]:
    return {
        "format": "audiocraft-packed-decoder",
        "format_version": str(FORMAT_VERSION),
        "quant_version": str(fastlm.QUANT_VERSION),
        "form": form,
        "source": Path(folder).name,
        "source_files": json.dumps(source_identity(folder), sort_keys=True),
    }


def quantize_decoder(model, form: str) -> None:
    """Put the decoder's Linear weights into `form`, in place (works on the meta device too)."""
    for module in model.decoder.modules():
        if not isinstance(module, torch.nn.Linear) or module.weight.dtype == torch.int8:
            continue
        weight = module.weight.detach()
        if form == "int8":
            if weight.is_meta:  # a skeleton: only the dtypes and shapes (quantizing meta tensors through
                # torch's reference ops took 2.5 s for musicgen-large's 484 weights)
                codes = torch.empty_like(weight, dtype=torch.int8)
                scale = torch.empty(weight.shape[0], dtype=torch.float32, device="meta")
            else:
                codes, scale = fastlm.quantize_int8(weight.float())
            module.weight = torch.nn.Parameter(codes, requires_grad=False)
            module.register_buffer("weight_scale", scale)
        else:
            module.weight = torch.nn.Parameter(weight.to(_DENSE[form]), requires_grad=False)


def _named_tensors(model) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()  # non-persistent ones too


def load_order(model) -> list[tuple[str, torch.Tensor]]:
    """The model's tensors in the order a load needs them, the order the file is written in: the
    decoder's first (the engine packs it while the rest is read), then the text encoder's and the
    audio codec's; module by module, each one's parameters and then its buffers (a Linear's int8
    codes and their scales side by side)."""
    rank = {name: i for i, (name, _) in enumerate(model.named_modules())}
    tensors = list(_named_tensors(model))  # the names the file has: a tied weight under its first one
    return sorted(tensors, key=lambda item: (not item[0].startswith("decoder."), rank[item[0].rpartition(".")[0]]))


def load(folder: Path, form: str, skeleton: Callable[[], object], build: Callable[[], object]) -> tuple[object, Reads]:
    """The model of `folder` with its decoder in `form`: from the cache when it holds a valid one;
    else `build()` (the float32 load), quantized and written to the cache.

    The model comes with what of it is still being read (server/models/streamed.py): wait for a
    module before using its weights, finish before handing the model out, and close it (a `with`
    block) so a failed load ends the reading thread.

    skeleton(): the model's structure on the meta device, weight norm already removed (what `build`
    gives, before quantizing)."""
    path = cache_path(folder, form)
    if path is None:
        model = build()
        quantize_decoder(model, form)
        return model, Reads()
    expected = expected_metadata(folder, form)
    found = _read(path, expected, skeleton)
    if found is not None:
        return found
    with _locked(path) as locked:
        if locked:  # another process may have written it while this one waited
            found = _read(path, expected, skeleton)
            if found is not None:
                return found
        model = build()
        quantize_decoder(model, form)
        if locked:
            _write(path, model, expected)
    return model, Reads()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """An exclusive lock on the cache file's lock file; False when the folder cannot be written."""
    fd = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:  # a read-only models dir (a container's read-only mount), a full disk
        log.warning("the packed-decoder cache %s cannot be written (%s): loading without it", path, exc)
        if fd is not None:
            os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path, expected: dict[str, str], skeleton: Callable[[], object]) -> tuple[object, Reads] | None:
    """The cached model, its tensors being read (the file is the reading thread's from here), or None
    (absent, stale, not the model's or damaged: the log says which)."""
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below; reads go straight into tensors
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("the packed-decoder cache %s cannot be read (%s): building it again", path, exc)
        return None
    with contextlib.ExitStack() as owns:
        owns.enter_context(f)
        try:
            entries, metadata, data_start = tensorfile.read_header(f)
            stale = [k for k, v in expected.items() if metadata.get(k) != v]
            if stale:
                log.info("the packed-decoder cache %s is stale (%s): building it again", path, ", ".join(stale))
                return None
            model = skeleton()
            quantize_decoder(model, expected["form"])
            wanted = {name: (t.dtype, tuple(t.shape)) for name, t in _named_tensors(model)}
            found = {name: (e.dtype, e.shape) for name, e in entries.items()}
            if found != wanted:
                differs = sorted(set(found.items()) ^ set(wanted.items()))[:3]
                log.warning("the packed-decoder cache %s does not fit the model (%s): building it again", path, differs)
                return None
            held = os.fstat(f.fileno())
            order = [name for name, _ in load_order(model)]
            reads = BackgroundReads(f, entries, data_start, model, order, _on_damage(path, held))
        except (tensorfile.TensorFileError, OSError) as exc:
            log.warning("the packed-decoder cache %s is damaged (%s): building it again", path, exc)
            return None
        owns.pop_all()  # the reading thread closes the file
    log.info("loading %s from the packed-decoder cache", path.name)
    return model.eval(), reads


def _on_damage(path: Path, held: os.stat_result) -> Callable[[Exception], tuple[str, str]]:
    """What a read that fails after the checks does: log it, remove the file (unless another process
    has already replaced it), and say so in the load's error (no host paths there: the log has them)."""

    def damaged(exc: Exception) -> tuple[str, str]:
        log.warning("the packed-decoder cache %s could not be read (%s): removing it", path, exc)
        with contextlib.suppress(OSError):
            there = os.stat(path)
            if (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino):
                path.unlink()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = (
            f"its packed-decoder cache could not be read ({type(exc).__name__}: {reason}); the file was "
            "removed, so the next load builds it again from the checkpoint"
        )
        return message, "load the model again"

    return damaged


def _write(path: Path, model, metadata: dict[str, str]) -> None:
    """The cache file, atomically; on failure (full disk, read-only) a warning and no file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            size = tensorfile.write(out, load_order(model), metadata)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        log.info("wrote the packed-decoder cache %s (%.2f GB)", path, size / 1e9)
        _remove_stale(path.parent)
    except OSError as exc:
        log.warning("could not write the packed-decoder cache %s (%s): loading without it", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _remove_stale(form_dir: Path) -> None:
    """Delete the cache files whose source folder is gone (an older revision, an old conversion)."""
    repo = form_dir.parent.parent
    for cached in form_dir.glob("*.safetensors"):
        if not any((repo / kind / cached.stem).is_dir() for kind in _SOURCE_KINDS):
            with contextlib.suppress(OSError):
                cached.unlink()
                cached.with_suffix(".lock").unlink(missing_ok=True)
