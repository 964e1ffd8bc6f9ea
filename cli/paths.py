"""Where the project lives: the repository root, its venv, config/runtime.json."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root (the directory holding pyproject.toml, config/ and test/).

    With the usual editable install it is the parent of the `cli` package. Otherwise the current
    directory is tried, then the parent of the package as a last resort.
    """
    for candidate in (PACKAGE_DIR.parent, Path.cwd()):
        if (candidate / "config" / "runtime.json").is_file() or (candidate / "pyproject.toml").is_file():
            return candidate
    return PACKAGE_DIR.parent


def venv_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / ".venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def current_python() -> Path:
    return Path(sys.executable)


def runtime_json() -> Path:
    return project_root() / "config" / "runtime.json"


def tests_dir() -> Path:
    return project_root() / "test"
