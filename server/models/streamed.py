"""A model's tensors read from a tensor file (server/models/tensorfile.py) by a background thread, so
whoever uses the model starts on the first modules while the rest are still being read.

The packed-decoder cache (server/models/packcache.py) loads this way: the engine packs the decoder's
layers (server/engine/fastlm.py) as they arrive, so a load from a cold disk takes about the longer of
the read and the packing rather than their sum (docs/benchmarks.md).

- **The model starts on the meta device** (its structure, checked against the file's header before
  the thread starts). Tensors are read in the order given, the order the user needs them, and each
  replaces its meta stand-in under every name it has (a tied weight stays one Parameter).
- **`wait(module)`** blocks until every tensor under `module` is in place; `finish()` until all are,
  and joins the thread. A model is not handed out before `finish()`.
- **A failed read** (an I/O error, a file cut short while it is read) ends the thread; a wait for
  anything not yet read, and `finish()`, then raise ModelLoadFailed saying what happened: a load fails
  rather than hanging or returning a half-read model. `close()` stops the thread and joins it (when
  the load failed elsewhere); leaving a `with` block closes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

import torch

from server.models import tensorfile
from server.models.errors import ModelLoadFailed

# What a damaged file means to the caller: (message, hint) of the load's error.
OnDamage = Callable[[Exception], tuple[str, str | None]]


class Reads:
    """Nothing left to read: the model is whole (a load that did not go through a tensor file)."""

    def wait(self, module: torch.nn.Module) -> None:
        """Return once every tensor under `module` is in place."""

    def finish(self) -> None:
        """Return once every tensor is in place and the reading has ended."""

    def close(self) -> None:
        """Stop reading (the load failed elsewhere) and end the thread."""

    def __enter__(self) -> Reads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BackgroundReads(Reads):
    """The tensors of `entries`, read from `f` in `order` into `model` by one thread (started here).

    on_damage: called once, on the reading thread, when the file fails to read (OSError,
    TensorFileError); gives the error's message and hint."""

    def __init__(
        self,
        f: BinaryIO,
        entries: dict[str, tensorfile.Entry],
        data_start: int,
        model: torch.nn.Module,
        order: Sequence[str],
        on_damage: OnDamage,
    ):
        self.model = model
        self._order = list(order)
        self._slots, self._last = _slots_and_extents(model, self._order)
        self._done = 0  # tensors of `order` in place
        self._failure: tuple[BaseException, str, str | None] | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._on_damage = on_damage
        self.finished_at: float | None = None  # when the last tensor was in place
        self._thread = threading.Thread(
            target=self._run, args=(f, entries, data_start), name="packcache-read", daemon=True
        )
        self._thread.start()

    def _run(self, f: BinaryIO, entries: dict[str, tensorfile.Entry], data_start: int) -> None:
        try:
            with f:
                for name, value in tensorfile.read(f, entries, data_start, self._order):
                    self._put(name, value)
                    with self._changed:
                        if self._closed:
                            return
                        self._done += 1
                        self._changed.notify_all()
            self.finished_at = time.perf_counter()
        except (OSError, tensorfile.TensorFileError) as exc:
            self._fail(exc, *self._on_damage(exc))
        except BaseException as exc:  # noqa: BLE001 - raised again by the waits, on the loading thread
            self._fail(exc, f"reading its weights failed ({type(exc).__name__}: {exc})", None)

    def _put(self, name: str, value: torch.Tensor) -> None:
        first = True
        for owner, attr, requires_grad in self._slots[name]:
            if attr in owner._parameters:
                if first:  # one Parameter under all its names, as in the skeleton
                    value = torch.nn.Parameter(value, requires_grad=requires_grad and value.is_floating_point())
                owner._parameters[attr] = value
            else:
                owner._buffers[attr] = value
            first = False

    def _fail(self, exc: BaseException, message: str, hint: str | None) -> None:
        with self._changed:
            self._failure = (exc, message, hint)
            self._changed.notify_all()

    def _raise(self) -> None:
        exc, message, hint = self._failure
        raise ModelLoadFailed(message, hint=hint) from exc  # a new one per wait: waits run on several threads

    def wait(self, module: torch.nn.Module) -> None:
        last = self._last.get(id(module))
        if last is None:
            raise ValueError(f"{type(module).__name__} is not a module of the model being read")
        with self._changed:
            while self._done <= last:
                if self._failure is not None:
                    self._raise()
                if self._closed:
                    raise RuntimeError("the read was stopped before this module was read")
                self._changed.wait()

    def finish(self) -> None:
        self._thread.join()
        if self._failure is not None:
            self._raise()
        if self._done < len(self._order):
            raise RuntimeError("the read was stopped before the model was whole")

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()


def _slots_and_extents(
    model: torch.nn.Module, order: Sequence[str]
) -> tuple[dict[str, list[tuple[torch.nn.Module, str, bool]]], dict[int, int]]:
    """Where each tensor of `order` goes ((module, attribute, requires_grad) under each of its names),
    and for each module (by id) the position in `order` of the last tensor under it (-1: none)."""
    position = {name: i for i, name in enumerate(order)}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    aliases: dict[int, list[str]] = {}
    for name, t in named:
        aliases.setdefault(id(t), []).append(name)
    modules = dict(model.named_modules(remove_duplicate=False))
    slots: dict[str, list[tuple[torch.nn.Module, str, bool]]] = {}
    last_under: dict[str, int] = {}
    requires_grad = {id(t): t.requires_grad for _, t in named}
    for key, names in aliases.items():
        read_as = [n for n in names if n in position]
        if len(read_as) != 1:
            raise ValueError(f"{names[0]}: {len(read_as)} of its names are in the file, not 1")
        at = position[read_as[0]]
        slots[read_as[0]] = []
        for name in names:
            owner, _, attr = name.rpartition(".")
            slots[read_as[0]].append((modules[owner], attr, requires_grad[key]))
            parts = name.split(".")
            for depth in range(len(parts)):  # "" (the model), "text_encoder", ... the owner
                prefix = ".".join(parts[:depth])
                last_under[prefix] = max(last_under.get(prefix, -1), at)
    if len(slots) != len(position):
        raise ValueError(f"{len(position) - len(slots)} tensors of the file are not the model's")
    extents: dict[int, int] = {}
    for prefix, module in modules.items():
        extents[id(module)] = max(extents.get(id(module), -1), last_under.get(prefix, -1))
    return slots, extents
