"""The engine's C++ kernels (kernels.cpp): built once per machine kind, cached on disk, loaded by path.

A build is keyed by the source, torch's and Python's versions and the instruction level it targets,
so a cache directory can hold the builds for several CPU kinds (a Docker image carries x86-64-v3 and
v4). The level follows the kernels torch itself runs (`torch.backends.cpu.get_cpu_capability()`,
which ATEN_CPU_CAPABILITY can lower): AVX-512 -> x86-64-v4, AVX2 -> x86-64-v3, anything else the
compiler's baseline. Building needs a C++ compiler and takes about 40 s; loading a cached build needs
neither. Where no build can be had, `kernels()` returns None and the engine keeps torch's ops (its
attention and its quantization arithmetic; `status()` says why, /health reports it).

AUDIOCRAFT_NATIVE=0 turns the kernels off; AUDIOCRAFT_NATIVE_DIR sets the cache directory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
MODULE = "audiocraft_kernels"
# Instruction levels: compiler flags per level. Keys are what `level()` and `--levels` name.
LEVELS = {
    "x86-64-v4": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
    "x86-64-v3": ["-march=x86-64-v3"],
    "baseline": [],
}
# -fopenmp: at::parallel_for is an inline template that runs serially when the extension is built
# without it. The library then shares torch's libgomp (same soname, already loaded): one thread pool.
_COMMON_FLAGS = ["-O3", "-std=c++17", "-fopenmp"]
_lock = threading.Lock()
_status: dict[str, str] = {}
_DISABLED = {"kernels": "torch", "reason": "AUDIOCRAFT_NATIVE=0"}


def enabled() -> bool:
    return os.environ.get("AUDIOCRAFT_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    configured = os.environ.get("AUDIOCRAFT_NATIVE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "audiocraft" / "native"


def level() -> str:
    """The instruction level this process's kernels should use (see the module docstring)."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return "baseline"
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "x86-64-v4", "AVX2": "x86-64-v3"}.get(capability, "baseline")


def build_path(level_name: str, directory: Path | None = None) -> Path:
    """The directory that holds the build for `level_name` (one library, named as its module)."""
    return (directory or cache_dir()) / f"{level_name}-{_build_key(level_name)}"


@functools.cache
def _build_key(level_name: str) -> str:
    """A hash of what a build depends on (the source is read once: /health asks on every call)."""
    key = hashlib.sha256()
    flags = " ".join(_COMMON_FLAGS + LEVELS[level_name])
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), sys.version.encode(), flags.encode()):
        key.update(part)
        key.update(b"\0")
    return key.hexdigest()[:16]


def _library(build_dir: Path) -> Path | None:
    found = sorted(build_dir.glob(f"{MODULE}*.so"))
    return found[0] if found else None


def build(level_name: str, directory: Path | None = None) -> Path:
    """Compile kernels.cpp for `level_name` into the cache, unless it is there already, and return
    the library's path. The build happens in a temporary directory that is renamed into place whole,
    so a reader never sees half a library (and of two concurrent builds, the first rename wins)."""
    target = build_path(level_name, directory)
    if (found := _library(target)) is not None:
        return found
    from torch.utils import cpp_extension  # slow to import; only a build needs it

    # torch runs `ninja` from PATH: the one pip installed beside this Python, when the venv is not active.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        # torch names a rebuild in the same process with other flags `<name>_v1`: the file name,
        # found below, is the module's name either way.
        cpp_extension.load(
            name=f"{MODULE}_{level_name.replace('-', '_')}",
            sources=[str(SOURCE)],
            extra_cflags=_COMMON_FLAGS + LEVELS[level_name],
            extra_ldflags=["-fopenmp"],
            build_directory=str(work),
            is_python_module=False,  # build only: the caller imports it by path
            verbose=False,
        )
        built = _library(work)
        if built is None:
            raise RuntimeError(f"the build left no library in {work}")
        for other in work.iterdir():  # objects and build files: only the library is kept
            if other != built:
                shutil.rmtree(other) if other.is_dir() else other.unlink()
        work.chmod(0o755)  # mkdtemp's 0700 would keep other users (the image's server) out
        try:
            os.rename(work, target)
        except OSError:
            if _library(target) is None:  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _library(target)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def kernels() -> ModuleType | None:
    """The engine's kernels for this CPU, built on first use; None where they cannot be had."""
    if not enabled():
        _set_status(**_DISABLED)
        return None
    name = level()
    with _lock:
        try:
            path = _library(build_path(name))
            if path is None:
                log.info("building the engine's kernels for %s (once per machine kind)", name)
                path = build(name)
            module = _load(path)
        except Exception as exc:  # noqa: BLE001 - no compiler, a failed build: torch's ops remain
            log.warning("the engine's kernels are unavailable, using torch's ops: %s", exc)
            _set_status(kernels="torch", reason=f"build or load failed: {str(exc).splitlines()[0][:200]}")
            return None
    _set_status(kernels="native", level=name, path=str(path))
    return module


def _set_status(**fields: str) -> None:
    _status.clear()
    _status.update(fields)


def status() -> dict[str, str]:
    """What the engine runs: {"kernels": "native" | "torch", "level" | "reason": ...}. Empty until a
    model that could use them has been loaded."""
    return dict(_status)


def describe() -> dict[str, str]:
    """status(), or before the first model load what it will be (no build is started here)."""
    if _status:
        return status()
    if not enabled():
        return dict(_DISABLED)
    name = level()
    built = _library(build_path(name)) is not None
    return {"kernels": "pending", "level": name, "built": "yes" if built else "no"}


def usable_levels() -> list[str]:
    """What `make kernels` prebuilds: this CPU's level, and x86-64-v3 below v4 (tests and benchmarks
    hold the kernels to AVX2 on AVX-512 machines). The baseline only where it is the level."""
    order = list(LEVELS)
    return [name for name in order[order.index(level()) :] if name != "baseline"] or ["baseline"]


def main(argv: list[str] | None = None) -> int:
    """Prebuild the kernels: `python -m server.engine.native [--dir D] [--levels L ...]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="cache directory (default: AUDIOCRAFT_NATIVE_DIR)")
    parser.add_argument("--levels", nargs="+", choices=sorted(LEVELS), default=None, help="default: usable_levels()")
    args = parser.parse_args(argv)
    levels = args.levels or usable_levels()
    # In parallel: each build is a compiler process (~40 s on one core).
    with ThreadPoolExecutor(max_workers=len(levels)) as pool:
        for path in pool.map(lambda name: build(name, args.dir), levels):
            print(path)
    return 0
