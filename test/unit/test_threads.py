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
    assert env == {"OMP_NUM_THREADS": str(threads.usable_cpus()), "GOMP_SPINCOUNT": str(threads.SPIN_COUNT)}
    env = {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(2, env)
    assert env == {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    env = {"GOMP_SPINCOUNT": "5"}
    threads.prepare_environment(2, env)
    assert env == {"GOMP_SPINCOUNT": "5", "OMP_NUM_THREADS": "2"}


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
        "print(os.environ['OMP_NUM_THREADS'], os.environ.get('GOMP_SPINCOUNT'), torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=True
    )
    n = str(threads.usable_cpus())
    assert out.stdout.split() == [n, str(threads.SPIN_COUNT), n]
