"""bench/gpu_check.py end to end in its --dry-run mode (the CPU, tiny shapes), as a GPU machine runs
it: from the source tree with PYTHONPATH=., in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_prints_every_check_in_one_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/gpu_check.py", "--dry-run", "--models", "musicgen-small", "--batches", "1", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("GPU check: dry run on the CPU")
    rows = [line.split(" | ") for line in lines if line.startswith("| musicgen-small")]
    checks = {(r[1], r[2]): r[3].rstrip(" |") for r in rows}
    assert checks[("greedy token identity vs transformers", "float32")].startswith("identical")
    for precision in ("float16", "bfloat16"):
        drift = next(v for (check, config), v in checks.items() if check.startswith("drift") and config == precision)
        assert "greedy agreement" in drift and "logit error" in drift
    for seconds in ("0.2", "0.4"):
        for batch in ("1", "2"):
            check = f"{seconds} s of audio, batch {batch}"
            assert checks[(check, "transformers generate (float32)")].endswith(" s")
            for engine in ("engine float32", "engine float16"):
                assert "x transformers" in checks[(check, engine)]
    assert "no graph: CUDA graphs need a GPU" in checks[("decode step in a CUDA graph (batch 1)", "float16")]
    assert sum(line.startswith("| model | check |") for line in lines) == 1  # one table


def test_it_names_what_is_missing():
    """Where a package it imports is missing, it says which and how to install it, and runs nothing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; sys.argv = ['gpu_check']; import bench.gpu_check as g; "
        "g.REQUIRED.append(('no_such_module_xyz', 'no-such-dist', None)); sys.exit(g.main([]))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "no-such-dist is missing" in done.stderr and "pip install no-such-dist" in done.stderr
