"""What a fresh interpreter loads: for the tests that keep start-up light (the CLI, the hub)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_loaded_by(code: str) -> set[str]:
    """The names in sys.modules after running `code` in a new interpreter at the repo root."""
    code += "\nimport sys\nprint('\\n'.join(sys.modules))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def packages_loaded_by(code: str) -> set[str]:
    """The top-level packages of modules_loaded_by(code)."""
    return {name.split(".")[0] for name in modules_loaded_by(code)}
