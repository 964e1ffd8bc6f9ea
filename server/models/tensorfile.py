"""Safetensors files written and read one tensor at a time.

The format is safetensors' own (an 8-byte header length, a JSON header of names, dtypes, shapes and
byte offsets, then the raw bytes), so any safetensors tool reads these files. The library itself is
not used for two reasons of memory, both measured on multi-GB checkpoints:

- `safetensors.torch.save_file` turns every tensor into bytes before writing the first one: a copy
  of the whole model in memory at once. `write` streams one tensor after another, and the values
  may be produced as they are written (bench/load.py makes random checkpoints that way).
- `safe_open` maps the whole file; every page a load touches stays in the process's RSS until the
  file is closed, so loading all of a file's tensors holds it twice over (the mapping and whatever
  the caller builds from it). `read` copies each tensor into its own storage with plain reads: once
  the caller drops a tensor (the packed decoder drops each layer's int8 codes after packing them),
  its memory is gone, and the page cache is not the process's.

`read` fills the tensors that lie one after another in the file with one `preadv` per run of up to
32 MB. A read on a thread beside busy Python threads (server/models/streamed.py) gets the GIL back
after each system call only when the others give it up, up to the 5 ms switch interval: reading
musicgen-small's cache (1.1 GB, 941 tensors) beside a thread spinning in Python took 5.2-6.8 s with
a read per tensor and 3.2 s with these runs, against 0.9-1.1 s alone (AMD EPYC Zen 4, 2 cores).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import torch

from lib.errors import Internal

_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}
# A header larger than this is not one we wrote (safetensors' own limit is 100 MB).
_MAX_HEADER_BYTES = 100 * 2**20
_RUN_BYTES = 32 << 20  # one preadv of tensors that follow each other in the file (module docstring)
_RUN_TENSORS = 512  # below IOV_MAX (1024 on Linux)


class TensorFileError(Internal, ValueError):
    """The file is not a whole, well-formed safetensors file (the pack cache rebuilds it; anywhere else
    it is a fault of ours, not the user's)."""


@dataclass(frozen=True)
class Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # byte offsets into the data section
    end: int


def _nbytes(dtype: torch.dtype, shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * torch.empty((), dtype=dtype).element_size()


def _as_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def write(
    out: BinaryIO,
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str] | None = None,
    values: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Write `tensors` (name, tensor) to `out`, one after another; returns the bytes written.

    values: gives each tensor's values as it is written (then `tensors` only need the right shape
    and dtype, e.g. on the meta device)."""
    tensors = list(tensors)
    header: dict[str, object] = {}
    offset = 0
    for name, t in tensors:
        if t.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} has no safetensors name")
        nbytes = _nbytes(t.dtype, t.shape)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
    out.write(len(raw).to_bytes(8, "little"))
    out.write(raw)
    for name, t in tensors:
        value = values(name, t) if values is not None else t
        if value.dtype != t.dtype or tuple(value.shape) != tuple(t.shape):
            got, want = f"{value.dtype} {tuple(value.shape)}", f"{t.dtype} {tuple(t.shape)}"
            raise ValueError(f"{name}: the values are {got}, not {want}")
        out.write(_as_bytes(value))
    return 8 + len(raw) + offset


def read_header(f: BinaryIO) -> tuple[dict[str, Entry], dict[str, str], int]:
    """(entries by name, metadata, where the data section starts) of an open file; TensorFileError
    unless the header is well formed and its tensors fill the file exactly."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    first = f.read(8)
    if len(first) < 8:
        raise TensorFileError("shorter than a header")
    length = int.from_bytes(first, "little")
    if length > min(_MAX_HEADER_BYTES, size - 8):
        raise TensorFileError(f"header length {length} does not fit a {size}-byte file")
    try:
        header = json.loads(f.read(length))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TensorFileError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise TensorFileError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise TensorFileError("metadata is not a map of strings")
    entries: dict[str, Entry] = {}
    for name, raw in header.items():
        try:
            dtype = _DTYPES[raw["dtype"]]
            shape = tuple(int(d) for d in raw["shape"])
            start, end = (int(x) for x in raw["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"{name}: malformed entry") from None
        if min(shape, default=0) < 0 or end - start != _nbytes(dtype, shape):
            raise TensorFileError(f"{name}: its offsets do not match its shape")
        entries[name] = Entry(dtype, shape, start, end)
    # The tensors tile the data section with no gap or overlap, and it ends where the file does.
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise TensorFileError("the tensors' byte ranges have gaps or overlap")
        position = entry.end
    if 8 + length + position != size:
        raise TensorFileError(f"the header describes {8 + length + position} bytes, the file has {size}")
    return entries, {str(k): v for k, v in metadata.items()}, 8 + length


def read(
    f: BinaryIO, entries: dict[str, Entry], data_start: int, order: Sequence[str] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of `entries`, each in its own new storage: in file order, or in `order` (names of
    `entries`; a file written in that order is still read front to back)."""
    names = sorted(entries, key=lambda name: entries[name].start) if order is None else list(order)
    fd = f.fileno()
    i = 0
    while i < len(names):
        run = _run(names, entries, i)
        tensors = [torch.empty(entries[n].shape, dtype=entries[n].dtype) for n in run]
        _fill(fd, data_start + entries[run[0]].start, list(zip(run, map(_as_bytes, tensors), strict=True)))
        yield from zip(run, tensors, strict=True)
        i += len(run)


def _run(names: Sequence[str], entries: dict[str, Entry], i: int) -> Sequence[str]:
    """names[i:j]: the longest run from i that lies back to back in the file, within the run limits."""
    j, size = i + 1, entries[names[i]].end - entries[names[i]].start
    while j < len(names) and j - i < _RUN_TENSORS:
        entry = entries[names[j]]
        if entry.start != entries[names[j - 1]].end or size + entry.end - entry.start > _RUN_BYTES:
            break
        size += entry.end - entry.start
        j += 1
    return names[i:j]


def _fill(fd: int, offset: int, views: list[tuple[str, memoryview]]) -> None:
    """Read the file from `offset` into the views, in order (a read may stop short: Linux gives at
    most ~2 GB per call)."""
    views = [(name, view) for name, view in views if len(view)]
    while views:
        n = os.preadv(fd, [view for _, view in views], offset)
        if not n:
            raise TensorFileError(f"{views[0][0]}: the file ends inside it")
        offset += n
        while n:
            name, view = views[0]
            if n < len(view):
                views[0] = (name, view[n:])
                break
            n -= len(view)
            views.pop(0)
