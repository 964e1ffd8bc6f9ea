"""How many threads torch runs, where torch work runs, and how the decode loop copes with a busy neighbour.

**Thread count.** torch's default is `os.cpu_count()`: every core of the host, even where the process
may use two of them (a `taskset`/cpuset affinity, or a container's CPU quota). More threads than
usable cores make every parallel region wait for a thread that is not running. The count here is
the cores the process may use: its affinity mask, capped by the cgroup's CPU quota.

**Beside another busy process.** torch's CPU build runs its intra-op threads on GNU OpenMP
(libgomp); a decode step is some hundreds of short parallel regions, each ending at a barrier. When
another process takes one of the two cores, every barrier waits for the thread that shares its core
with that process. Measured on musicgen-small, 5 s of audio at int8-dynamic, beside one CPU hog
(bench/contention.py, docs/benchmarks.md §Contention, AMD Zen 4):

| OpenMP set-up | alone | beside the hog |
|---|---|---|
| 2 threads, libgomp's default spin | 8.4 s | 29.4 s |
| 2 threads, GOMP_SPINCOUNT 1,000 / 10,000 / 30,000 | 10.5 / 8.2 / 8.8 s | 17.0 / 39.9 / 82.4 s |
| 2 threads, OMP_WAIT_POLICY=PASSIVE | 13.7 s | 13.0 s |
| 1 thread | 12.1 s | 10.8 s |

No wait policy is good in both cases, and libgomp reads it once. So the decode loop chooses its
thread count from the step times it measures (`StepThreads`): all usable cores while they pay, one
when a neighbour makes them cost, probing the other choice now and then.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(root: Path) -> float | None:
    """The CPU quota in cores, or None when there is none (or no cgroup to read)."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def thread_count(setting: int) -> int:
    """torch's intra-op threads: the setting, or (0) the usable cores."""
    return setting if setting > 0 else usable_cpus()


def prepare_environment(setting: int, environ: dict[str, str] | None = None) -> None:
    """Set OpenMP's thread count for torch, before torch is imported (a variable the user set is kept).

    Every thread that runs torch ops (the decode worker, the loader's packing pool, a request thread)
    gets an OpenMP team of its own, sized from OMP_NUM_THREADS: the usable cores, not the host's."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_NUM_THREADS", str(thread_count(setting)))


def apply(setting: int) -> int:
    """Size torch's intra-op pool (after import); returns the count."""
    import torch

    count = thread_count(setting)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def in_own_thread(fn: Callable[..., T], *args: object) -> T:
    """Run torch work outside the decode worker in a thread that ends with it.

    libgomp gives every thread that runs a parallel region a team of its own, and while more team
    threads are alive than there are cores it throttles every team's spinning (1,000 spins instead of
    300,000). A server's request threads live on after their work, idle, so a model loaded or a file
    encoded in one left the decode worker throttled: 5 s of musicgen-small took 12.0 s after
    POST /api/models/.../load against 8.1 s after a load by the worker itself (bench/contention.py
    --served), and 100 steps took 4.8 s instead of 2.6 s while one idle thread's team was alive.
    When the thread ends, its team goes with it."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=run, name="audiocraft-torch-call")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


# Off: the decode loop keeps torch's thread count (benchmarks compare against it).
ADAPTIVE = True


class StepThreads:
    """Chooses the decode loop's thread count from measured step times.

    It runs at `most` threads. After FIRST_PROBE steps it tries another count (one thread, or half)
    for WINDOW measured steps, then its own again for WINDOW, and compares the alternative's mean step
    time with its own before and after it (which cancels the slow growth of a step as the attention
    gets longer). It switches when the other count is faster by MARGIN. The first step after each
    change is not measured (threads wake up), nor is a window in which the batch changed size. The
    next probe comes PROBE_EVERY steps later, twice as late after each probe that kept the count (up
    to PROBE_MAX), so a steady machine pays for few probes and a changed one is noticed in seconds.

    **Bits.** The count is changed inside the step only, and put back after it, so T5, the prefill and
    EnCodec always run at `most` threads: their convolutions and fp32 matmuls give other bits at
    another count (the audio of a seed would depend on the machine's load). For the same reason only
    steps whose logits are the same bits at any count adapt (`adapt`): the int8 kernels (exact integer
    sums, measured bitwise equal at 1 and 2 threads on the real shape); fp32 and bf16 dense matmuls
    differ (2e-6 on fp32 logits) and keep `most`.
    """

    FIRST_PROBE = 8
    PROBE_EVERY = 48
    PROBE_MAX = 384
    WINDOW = 3
    MARGIN = 0.05

    def __init__(self, most: int):
        self.most = max(1, most)
        self.candidates = sorted({self.most, max(1, self.most // 2), 1}, reverse=True)
        self.current = self.most
        self._since_probe = 0
        self._probes = 0
        self._plan: list[tuple[int, str]] = []  # (threads, window label) of the probe's coming steps
        self._times: dict[str, list[float]] = {"before": [], "other": [], "after": []}
        self._recent: list[float] = []  # measured step times at `current`, newest last
        self._key: object = None
        self._other = self.most
        self._every = self.PROBE_EVERY
        self._skip = False
        self._last = self.most  # the count of the last step

    @contextmanager
    def step(self, key: object, adapt: bool = True):
        """Wrap one decode step; `key` names the batch's shape (steps of different shapes are not
        compared); adapt=False: this step's bits depend on the count, run it at `most`."""
        if not (ADAPTIVE and adapt) or len(self.candidates) == 1:
            yield
            return
        threads, label = self._plan[0] if self._plan else (self.current, "run")
        if key != self._key:
            self._key, self._skip = key, True
            self._recent.clear()
            if self._plan:  # the batch changed under a probe: drop it
                self._plan.clear()
                threads, label = self.current, "run"
        if threads != self._last:  # the first step at a new count wakes threads: not measured
            self._last, self._skip = threads, True
        import torch

        if threads != self.most:
            torch.set_num_threads(threads)
        try:
            started = time.perf_counter()
            yield
            elapsed = time.perf_counter() - started
        finally:
            if threads != self.most:
                torch.set_num_threads(self.most)
        self._record(label, elapsed)

    def _record(self, label: str, elapsed: float) -> None:
        skipped, self._skip = self._skip, False
        if label == "run":
            if not skipped:
                self._recent = (self._recent + [elapsed])[-self.WINDOW :]
            self._since_probe += 1
            due = self.FIRST_PROBE if self._probes == 0 else self._every
            if self._since_probe >= due and len(self._recent) == self.WINDOW:
                self._start_probe()
            return
        if not skipped:
            self._times[label].append(elapsed)
        self._plan.pop(0)
        if not self._plan:
            self._finish_probe()

    def _start_probe(self) -> None:
        others = [c for c in self.candidates if c != self.current]
        other = self._other = others[self._probes % len(others)]
        self._probes += 1
        self._since_probe = 0
        self._times = {"before": list(self._recent), "other": [], "after": []}
        # One unmeasured step after each change of count, then WINDOW measured ones.
        self._plan = [(other, "other")] * (self.WINDOW + 1) + [(self.current, "after")] * (self.WINDOW + 1)

    def _finish_probe(self) -> None:
        times, other = self._times, self._other
        if not all(times.values()):
            return
        own = (sum(times["before"]) / len(times["before"]) + sum(times["after"]) / len(times["after"])) / 2
        theirs = sum(times["other"]) / len(times["other"])
        if theirs < own * (1 - self.MARGIN):
            self.current = other
            self._recent.clear()
            self._every = self.PROBE_EVERY
        else:
            self._every = min(self.PROBE_MAX, self._every * 2)


_local = threading.local()


def step_threads() -> StepThreads:
    """This thread's chooser (the decode worker keeps one across batches)."""
    chooser = getattr(_local, "chooser", None)
    if chooser is None:
        import torch

        chooser = _local.chooser = StepThreads(torch.get_num_threads())
    return chooser
