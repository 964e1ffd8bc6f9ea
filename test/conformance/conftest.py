"""What the conformance tests share: the oracle's environment (setup-env.sh) and running its scripts."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def oracle_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass(frozen=True)
class OracleVenv:
    python: str
    setup_s: float  # seconds setup-env.sh took (nothing when it was cached)

    def run(self, script: str, out: Path, *args: Path | str) -> None:
        """Run one oracle script (in the oracle's venv) writing into `out`; anything wrong fails the test."""
        run = subprocess.run(
            [self.python, str(HERE / script), str(out), *map(str, args)],
            capture_output=True, text=True, timeout=1800, env=oracle_env(),
        )  # fmt: skip
        assert run.returncode == 0, f"{script} failed:\n{run.stderr[-4000:]}"


@pytest.fixture(scope="session")
def oracle_environ() -> dict[str, str]:
    """The environment an oracle's set-up script or Python runs in (not this venv's)."""
    return oracle_env()


@pytest.fixture(scope="session")
def oracle_venv() -> OracleVenv:
    """The oracle's venv. Skips only when the environment cannot be created (no package registry);
    anything that goes wrong after that fails."""
    started = time.monotonic()
    setup = subprocess.run(
        ["bash", str(HERE / "setup-env.sh")], capture_output=True, text=True, timeout=3600, env=oracle_env()
    )
    if setup.returncode != 0:
        tail = "\n".join(setup.stderr.strip().splitlines()[-15:])
        pytest.skip(
            f"the audiocraft oracle environment could not be created (setup-env.sh exit {setup.returncode}):\n{tail}"
        )
    return OracleVenv(setup.stdout.strip().splitlines()[-1], time.monotonic() - started)
