"""glibc's heap and the weights a load frees: give the memory back to the OS.

Loading a model frees big blocks (fp32 layers released as they are packed, the q/k/v weights fused
into one). glibc keeps such blocks in its heap, so RSS would not drop on its own. Both calls do
nothing on other C libraries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
BIG_BLOCK_BYTES = 16 * 2**20
LOAD_BLOCK_BYTES = 256 * 2**10


def map_big_blocks() -> None:
    """Give every allocation of 16 MB or more its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time a big block is freed, so the weights released while a
    model is packed (one fp32 layer after another) stay in its heap and count in RSS until the end:
    musicgen-large peaked at 22.5 GB loading at int8, 17.4 GB with this (docs/benchmarks.md). A fixed
    threshold stops that. Decode steps allocate far below 16 MB, so they never pay for a mapping.
    """
    _mmap_threshold(BIG_BLOCK_BYTES)


@contextlib.contextmanager
def map_load_blocks() -> Iterator[None]:
    """While a model loads, blocks of 256 KB or more get their own mapping too.

    A load from the packed-decoder cache reads every int8 weight first, then packs the layers in
    worker threads, each freeing its layer's codes. Freed heap blocks stay in the heap of the thread
    that allocated them (glibc keeps one arena per thread), where the other threads' packed copies
    cannot reuse them, so at the end memory held both: musicgen-small peaked at 2.5 GB for 1.1 GB
    held (docs/benchmarks.md). Mapped blocks go back to the OS as each is freed."""
    _mmap_threshold(LOAD_BLOCK_BYTES)
    try:
        yield
    finally:
        _mmap_threshold(BIG_BLOCK_BYTES)


def _mmap_threshold(nbytes: int) -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, nbytes)
    except (OSError, AttributeError):  # not glibc
        pass


def return_freed_memory() -> None:
    """Hand freed memory back to the OS: Python's cycles first, then glibc's heap (malloc_trim)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
