"""How many threads torch runs, and how its idle threads wait.

**Thread count.** torch's default is `os.cpu_count()`: every core of the host, even where the process
may use two of them (a `taskset`/cpuset affinity, or a container's CPU quota). More threads than
usable cores make every parallel region wait for a thread that is not running. The count here is
the cores the process may use: its affinity mask, capped by the cgroup's CPU quota.

**Waiting.** torch's CPU build runs its intra-op threads on GNU OpenMP (libgomp). After each
parallel region libgomp's threads spin for GOMP_SPINCOUNT iterations before they sleep (300,000 by
default, milliseconds). A decode step is some hundreds of short regions, so spinning pays on a
quiet machine; beside another busy process it collapses: a spinning thread burns the time slice it
shares with the neighbour, and the region's end then waits for that thread's next slice. Measured
on musicgen-small (bench/contention.py, docs/benchmarks.md §Contention): the default spin took 3.3x
the time alone beside one CPU hog; sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs 40 % alone.
A short spin keeps most of both. libgomp reads these variables once, when torch loads it, so they
are set in the environment before torch is imported, and only where the user has set nothing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# Spin iterations before an idle OpenMP thread sleeps (see the module docstring for the measure).
SPIN_COUNT = 10_000

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
    """Set OpenMP's thread count and wait policy for torch, before torch is imported.

    Variables the user set are kept. Every thread that runs torch ops (the decode worker, the loader's
    packing pool, a request thread) gets an OpenMP team of its own, sized from OMP_NUM_THREADS."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_NUM_THREADS", str(thread_count(setting)))
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))


def apply(setting: int) -> int:
    """Size torch's intra-op pool (after import); returns the count."""
    import torch

    count = thread_count(setting)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
