"""A fresh interpreter: for the tests of what start-up loads (the CLI, the hub) and of what runs
without some package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter at the repo root; its exit code and output."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def modules_loaded_by(code: str) -> set[str]:
    """The names in sys.modules after running `code` in a new interpreter at the repo root."""
    r = run_fresh(code + "\nimport sys\nprint('\\n'.join(sys.modules))\n")
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def packages_loaded_by(code: str) -> set[str]:
    """The top-level packages of modules_loaded_by(code)."""
    return {name.split(".")[0] for name in modules_loaded_by(code)}
