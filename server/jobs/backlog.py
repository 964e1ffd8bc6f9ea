"""How long until the queue has room: the Retry-After of a 429, from the queue's real work.

A job's work is its units (seconds of audio for a generation, one job for the other kinds) times
the seconds per unit measured on the last jobs of its kind that succeeded here. A lane runs
`capacity` jobs at once; each slot frees when its running job ends (its own ETA when the lane gives
one), and the queued jobs of the lane take the slots in queue order. A lane that batches by group
(the decode lane: one kind and model per batch) drains before a job of another group starts. A
submission of n jobs fits once `queued + n - depth` queued jobs have started: the estimate is when
the last of those starts. Torch-free, and pure apart from the history it keeps.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence

from server.jobs.job import Job

DEFAULT_SECONDS_PER_UNIT = 1.0  # before anything of a kind has run here: about real time on a CPU
HISTORY = 20  # jobs per kind


def units(job: Job) -> float:
    """Seconds of audio the job asks for; 1 for a job that has no duration (codec, download)."""
    duration = getattr(job.request, "duration", None)
    return float(duration) if isinstance(duration, int | float) and duration > 0 else 1.0


class Throughput:
    """Seconds of wall time per unit of work, per job kind, over its last HISTORY successful jobs.
    Kept in this process; a subclass keeps the samples elsewhere (the Redis queue's, shared by every
    node: server/jobs/cluster/store.py) by overriding `add` and `samples`."""

    def __init__(self, default: float = DEFAULT_SECONDS_PER_UNIT):
        self.default = default
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def record(self, job: Job) -> None:
        """A job that ended: only successes count (a cancel or an early failure says nothing of speed)."""
        if job.state != "succeeded" or job.started_at is None or job.finished_at is None:
            return
        self.add(job.kind, max(0.0, job.finished_at - job.started_at), units(job))

    def add(self, kind: str, seconds: float, amount: float) -> None:
        with self._lock:
            self._samples.setdefault(kind, deque(maxlen=HISTORY)).append((seconds, amount))

    def samples(self, kind: str) -> list[tuple[float, float]]:
        """(wall seconds, units) of the kind's last successful jobs."""
        with self._lock:
            return list(self._samples.get(kind, ()))

    def seconds_per_unit(self, kind: str) -> float:
        samples = self.samples(kind)
        amount = sum(u for _, u in samples)
        return sum(w for w, _ in samples) / amount if amount > 0 else self.default

    def work(self, job: Job) -> float:
        """The job's estimated run time, start to end."""
        return units(job) * self.seconds_per_unit(job.kind)

    def remaining(self, job: Job, now: float) -> float:
        """A running job's time left: its ETA when its lane gives one, else its work less its time so far."""
        if job.eta_s is not None:
            return max(0.0, job.eta_s)
        started = job.started_at if job.started_at is not None else now
        return max(0.0, self.work(job) - (now - started))


def start_times(
    capacity: int,
    running: Sequence[float],
    queued: Sequence[Job],
    work: Callable[[Job], float],
    group: Callable[[Job], Hashable | None],
    running_group: Hashable | None = None,
) -> list[float]:
    """Seconds from now at which each queued job of one lane starts (in queue order): `capacity`
    slots, free once their running job's `running` time is up; a job whose group differs from the
    batch's waits for every slot (the lane drains between groups)."""
    slots = sorted(list(running)[:capacity] + [0.0] * max(0, capacity - len(running)))
    heapq.heapify(slots)
    current = running_group
    starts = []
    for job in queued:
        mine = group(job)
        if mine is not None and current is not None and mine != current:
            drained = max(slots)
            slots = [drained] * len(slots)
        current = mine if mine is not None else current
        start = heapq.heappop(slots)
        starts.append(start)
        heapq.heappush(slots, start + work(job))
    return starts


def wait_for_room(starts: Sequence[float], need: int) -> float:
    """Seconds until `need` of the queued jobs (whose start times are given, any lane) have started."""
    if need <= 0 or not starts:
        return 0.0
    ordered = sorted(starts)
    return ordered[min(need, len(ordered)) - 1]
