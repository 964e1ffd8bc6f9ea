"""Thread count from the cores the process may use, and OpenMP's wait policy set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server.engine import threads

ROOT = Path(__file__).resolve().parents[2]


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_no_cgroup_quota_means_the_affinity_mask(tmp_path):
    assert threads.usable_cpus(tmp_path) == _affinity()
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus(tmp_path) == _affinity()


def test_a_cgroup_v2_quota_caps_the_count(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: still one thread
    assert threads.usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{100000 * 64} 100000\n")  # more than the mask allows
    assert threads.usable_cpus(tmp_path) == _affinity()


def test_a_cgroup_v1_quota_caps_the_count(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert threads.usable_cpus(tmp_path) == _affinity()


def test_the_setting_wins_over_the_cores():
    assert threads.thread_count(3) == 3
    assert threads.thread_count(0) == threads.usable_cpus()


def test_environment_keeps_what_the_user_set():
    env: dict[str, str] = {}
    threads.prepare_environment(0, env)
    assert env == {"OMP_NUM_THREADS": str(threads.usable_cpus())}
    env = {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(2, env)
    assert env == {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}


def test_the_server_entry_sets_them_before_torch_loads(tmp_path):
    """`serve` prepares the environment before uvicorn and the app import torch; a process that ran it
    has torch sized to the usable cores."""
    code = (
        "import os, sys\n"
        "import server.main as m\n"
        "from lib.settings import Settings\n"
        "import uvicorn\n"
        "uvicorn.run = lambda app, **kw: None\n"
        f"m.serve(Settings(torch_threads=0, data_dir={str(tmp_path)!r}, models_dir={str(tmp_path)!r}))\n"
        "import torch\n"
        "assert 'torch' in sys.modules\n"
        "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=True
    )
    n = str(threads.usable_cpus())
    assert out.stdout.split() == [n, n]


class FakeMachine:
    """Stands in for the clock and torch's thread setting: a step costs what `cost(threads)` says."""

    def __init__(self, monkeypatch, cost):
        import torch

        self.now = 0.0
        self.threads = 2
        self.cost = cost
        self.counts: list[int] = []
        monkeypatch.setattr(threads.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(torch, "set_num_threads", self._set)

    def _set(self, n: int) -> None:
        self.threads = n

    def run(self, chooser: threads.StepThreads, steps: int, key: object = 2) -> None:
        for _ in range(steps):
            with chooser.step(key):
                self.now += self.cost(self.threads)
                self.counts.append(self.threads)
            assert self.threads == chooser.most  # put back: what runs between steps keeps its bits


def test_step_threads_keep_every_core_while_they_pay(monkeypatch):
    machine = FakeMachine(monkeypatch, lambda n: {2: 1.0, 1: 1.45}[n])  # alone: 2 threads are faster
    chooser = threads.StepThreads(2)
    machine.run(chooser, 400)
    assert chooser.current == 2
    # Probes are few and get rarer: one thread ran for a few steps per probe only.
    assert machine.counts.count(1) <= 5 * (threads.StepThreads.WINDOW + 1)
    assert machine.counts[-100:].count(1) <= threads.StepThreads.WINDOW + 1


def test_step_threads_drop_to_one_beside_a_neighbour_and_come_back(monkeypatch):
    hog = {"on": True}
    machine = FakeMachine(monkeypatch, lambda n: ({2: 3.5, 1: 1.1} if hog["on"] else {2: 1.0, 1: 1.45})[n])
    chooser = threads.StepThreads(2)
    machine.run(chooser, 30)
    assert chooser.current == 1  # found at the first probe
    assert machine.counts[-10:] == [1] * 10
    hog["on"] = False
    machine.run(chooser, 200)
    assert chooser.current == 2
    assert machine.counts[-48:].count(2) >= 48 - (threads.StepThreads.WINDOW + 1)  # a probe at most


def test_step_threads_compare_only_steps_of_one_batch_shape(monkeypatch):
    """A request joining during a probe makes steps slower for a reason that is not the thread count."""
    machine = FakeMachine(monkeypatch, lambda n: {2: 1.0, 1: 1.45}[n])
    chooser = threads.StepThreads(2)
    machine.run(chooser, threads.StepThreads.FIRST_PROBE + 1, key=2)  # the probe has begun, at one thread
    assert machine.counts[-1] == 1
    machine.run(chooser, 20, key=4)
    assert chooser.current == 2
    assert machine.counts[-5:] == [2] * 5


def test_step_threads_keep_the_count_for_steps_whose_bits_depend_on_it(monkeypatch):
    machine = FakeMachine(monkeypatch, lambda n: {2: 3.5, 1: 1.1}[n])  # one thread would be faster
    chooser = threads.StepThreads(2)
    for _ in range(100):
        with chooser.step(2, adapt=False):
            machine.now += machine.cost(machine.threads)
            machine.counts.append(machine.threads)
    assert set(machine.counts) == {2}


def test_step_threads_do_nothing_with_one_core_or_when_off(monkeypatch):
    machine = FakeMachine(monkeypatch, lambda n: 1.0)
    machine.threads = 1
    machine.run(threads.StepThreads(1), 100)
    assert set(machine.counts) == {1}
    monkeypatch.setattr(threads, "ADAPTIVE", False)
    machine.threads, machine.counts = 2, []
    machine.run(threads.StepThreads(2), 100)
    assert set(machine.counts) == {2}


def test_torch_work_runs_in_a_thread_that_ends_with_it():
    import threading

    import pytest

    seen = []

    def work(x):
        seen.append(threading.current_thread())
        return x * 2

    assert threads.in_own_thread(work, 21) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def fails():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        threads.in_own_thread(fails)


def test_tokens_do_not_depend_on_the_thread_count(monkeypatch):
    """StepThreads changes the count mid-request, so a request's tokens must not depend on it."""
    import torch

    monkeypatch.setattr(threads, "ADAPTIVE", False)  # the test sets the counts itself
    from engine_reference import tiny_lm

    from server.engine.decode import DecodeBatch, DecodeRequest
    from server.engine.fastlm import FastLM

    lm = tiny_lm("musicgen-small")
    before = torch.get_num_threads()
    try:
        for precision in ("float32", "int8-dynamic"):
            lm.fast = FastLM(lm.model.decoder, precision, torch.device("cpu"))
            runs = []
            for counts in ([2], [1], [2, 1, 2, 1]):  # fixed, or changing every step
                batch = DecodeBatch(lm)
                handle = batch.add(DecodeRequest("rain on a tin roof", 24, seed=3))
                step = 0
                while len(batch):
                    torch.set_num_threads(counts[step % len(counts)])
                    batch.step()
                    step += 1
                runs.append(batch.pop(handle))
            assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2]), precision
    finally:
        torch.set_num_threads(before)
