"""A job's audio while it is made: what the decode lane writes and a streaming answer reads.

A lane writes float32 blocks [channels, n] at the model's rate as its job makes them (FeedWriter),
then the feed ends with the job. A reader follows it from its first block: the blocks made so far at
once, then each as it comes, until the end. The queue holds the feeds (JobQueue.open_feed / follow):
in this process for the embedded queue (`AudioFeed`, below), in a Redis stream per job for the
cluster (server/jobs/cluster/feed.py), where the reader is on an API node and the writer on a worker.
Torch-free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import numpy as np


class FeedWriter(Protocol):
    def write(self, audio: np.ndarray) -> None:
        """The next samples, float32 [channels, n] at the model's rate."""

    def close(self, state: str) -> None:
        """The job ended in `state`: no more samples."""


class AudioFeed:
    """One job's feed in this process: every block kept until the job ends, then dropped with it."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._ended: str | None = None
        self._lock = threading.Lock()
        self._listeners: set[Callable[[], None]] = set()

    def write(self, audio: np.ndarray) -> None:
        with self._lock:
            if self._ended is not None:
                return
            self._blocks.append(np.ascontiguousarray(audio, dtype=np.float32))
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    def close(self, state: str) -> None:
        with self._lock:
            if self._ended is not None:
                return
            self._ended = state
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    async def follow(self) -> AsyncIterator[np.ndarray]:
        """Every block from the first, as they come, until the feed ends."""
        loop = asyncio.get_running_loop()
        more = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(more.set)

        with self._lock:
            self._listeners.add(wake)
        try:
            read = 0
            while True:
                with self._lock:
                    blocks, ended = self._blocks[read:], self._ended
                read += len(blocks)
                for block in blocks:
                    yield block
                if not blocks:
                    if ended is not None:
                        return
                    await more.wait()
                    more.clear()
        finally:
            with self._lock:
                self._listeners.discard(wake)


def streams(request: object) -> bool:
    """Was the job asked to stream (its lane then writes its feed)?"""
    return bool(getattr(request, "stream", False))
