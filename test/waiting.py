"""Waits that follow progress instead of racing a wall clock.

A test that waits for the service (a job, a download, a server start) polls a probe. The probe
answers (done, signature): `done` is falsy to keep waiting, or the value the wait returns; the
signature is whatever shows progress (a job's state, progress, queue position, downloaded bytes; a
process's CPU time; a log's size). The wait goes on while the signature keeps changing, and fails only
when it has not changed for `stall_s` seconds, with what it waited for, the last signature and how
long it stalled. A loaded machine makes every step slower, never stops it, so only a real hang fails.

`HANG_GUARD_S` caps one wait absolutely, far above any plausible run, in case something keeps
"changing" without ever finishing. Things that cannot report progress (a synchronous generation
request, a CLI command run to completion) get a timeout at hang-guard level instead: `HANG_GUARD_S`
when they generate audio, `QUICK_HANG_GUARD_S` when they do not. No test asserts on elapsed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import httpx

# No change at all for this long means stuck. Generous: under a CPU hog one step of a tiny model,
# a model load or an interpreter start can take tens of seconds; still finite, so a hang fails.
STALL_S = 120.0
# Absolute cap on one wait, and the timeout of work that shows no progress (a synchronous generation
# request, a CLI command that generates): far above any plausible run, even on a loaded machine.
HANG_GUARD_S = 1800.0
# The timeout of a request or CLI command that does no generation (status, help, a GET): quiet, they
# take well under 3 s.
QUICK_HANG_GUARD_S = 300.0
POLL_S = 0.05

TERMINAL = ("succeeded", "failed", "cancelled")


class Stalled(AssertionError):
    """A wait saw no progress for its stall time (or ran past its hang guard)."""


def wait_for_progress(
    probe: Callable[[], tuple[Any, Hashable]],
    what: str,
    *,
    stall_s: float = STALL_S,
    hang_guard_s: float = HANG_GUARD_S,
    poll_s: float = POLL_S,
) -> Any:
    """Poll `probe` until its `done` is truthy (returned); fail when its signature stops changing."""
    started = last_change = time.monotonic()
    last: Any = object()  # no signature seen yet
    while True:
        done, signature = probe()
        if done:
            return done
        now = time.monotonic()
        if signature != last:
            last, last_change = signature, now
        elif now - last_change >= stall_s:
            raise Stalled(
                f"waiting for {what}: no progress for {now - last_change:.1f} s "
                f"(stall limit {stall_s:g} s, {now - started:.1f} s in all); last seen: {last!r}"
            )
        if now - started >= hang_guard_s:
            raise Stalled(
                f"waiting for {what}: still not done after {now - started:.0f} s, the hang guard "
                f"(it kept changing, never finished); last seen: {last!r}"
            )
        time.sleep(poll_s)


# -- jobs ------------------------------------------------------------------------------------------


def job_signature(job: dict) -> tuple:
    """What moves while a job gets on: state, progress, queue position, downloaded bytes."""
    download = job.get("download") or {}
    return job["id"], job["state"], job.get("progress"), job.get("position"), download.get("bytes_done")


def get_json(client, path: str, stall_s: float = STALL_S, **params: Any) -> Any:  # noqa: ANN001
    """GET for a poll. Through an httpx.Client whose own timeout is a hang guard, a poll still gives
    up at the stall limit (a TestClient runs the app in-process and has no timeouts)."""
    # Only an httpx.Client takes a timeout (starlette's TestClient, on another httpx, warns about one).
    timeout = {"timeout": stall_s} if isinstance(client, httpx.Client) else {}
    try:
        r = client.get(path, params=params or None, **timeout)
    except httpx.TimeoutException as e:
        raise Stalled(f"GET {path}: no answer within {stall_s:g} s (the stall limit): {e!r}") from None
    r.raise_for_status()
    return r.json()


def running_signature(client, stall_s: float = STALL_S) -> tuple:  # noqa: ANN001
    """The progress of whatever the server is running: a job queued behind others still moves."""
    running = get_json(client, "/api/jobs", stall_s, state="running", limit=1000)["jobs"]
    return tuple(job_signature(j) for j in running)


def wait_jobs(
    client,  # noqa: ANN001 - an httpx.Client or a TestClient
    ids: Iterable[str],
    until: Callable[[list[dict]], bool] | None = None,
    *,
    what: str | None = None,
    stall_s: float = STALL_S,
    poll_s: float = 0.1,
) -> list[dict]:
    """Poll the jobs until `until(jobs)` (default: all ended); their last views.

    Progress is any change in these jobs or in the server's running jobs."""
    ids = list(ids)
    until = until or (lambda jobs: all(j["state"] in TERMINAL for j in jobs))

    def probe() -> tuple[list[dict] | None, tuple]:
        jobs = [get_json(client, f"/api/jobs/{i}", stall_s) for i in ids]
        signature = (tuple(job_signature(j) for j in jobs), running_signature(client, stall_s))
        return (jobs if until(jobs) else None), signature

    return wait_for_progress(probe, what or f"jobs {ids} to end", stall_s=stall_s, poll_s=poll_s)


def wait_job(client, job_id: str, **kw: Any) -> dict:  # noqa: ANN001
    """Poll one job until it ends; its final view."""
    return wait_jobs(client, [job_id], what=f"job {job_id} to end", **kw)[0]


# -- processes -------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """The CPU time a live process has used so far (clock ticks, user + system; Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
