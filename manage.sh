#!/usr/bin/env bash
# Thin lifecycle script (the contract's entry point): makes sure the CLI exists, then hands it
# every argument. `./manage.sh manage install` then installs the server itself.
#
# The bootstrap installs only the light CLI (typer, rich, httpx; no torch) into .venv, so that on
# a fresh clone `./manage.sh manage install` does the real install and exits 0 (not 2, "already
# installed"). `manage install` runs `make install`, which adds the server extra to the same venv.
set -euo pipefail

# The real folder of this script, also when it is reached through a symlink (the platform installs
# `~/.local/bin/resource-audiocraft -> <repo>/cli.sh`). `readlink -f` is not on every system (older
# macOS), so the links are followed one at a time.
real_path() {
    local path="$1" dir
    while [[ -L "${path}" ]]; do
        dir="$(cd -P "$(dirname "${path}")" && pwd)"
        path="$(readlink "${path}")"
        [[ "${path}" == /* ]] || path="${dir}/${path}"
    done
    echo "$(cd -P "$(dirname "${path}")" && pwd)/$(basename "${path}")"
}

ROOT="$(dirname "$(real_path "${BASH_SOURCE[0]}")")"
VENV="${ROOT}/.venv"
CLI="${VENV}/bin/resource-audiocraft"

if [[ ! -x "${CLI}" ]]; then
    PYTHON="${PYTHON:-python3}"
    if ! command -v "${PYTHON}" >/dev/null 2>&1; then
        echo "error: ${PYTHON} not found; install Python 3.11+ (or set PYTHON=/path/to/python3)" >&2
        exit 1
    fi
    echo "resource-audiocraft: first run, installing the CLI into ${VENV} ..." >&2
    if [[ ! -x "${VENV}/bin/python" ]]; then
        "${PYTHON}" -m venv "${VENV}" >&2
        "${VENV}/bin/python" -m pip install -q --upgrade pip >&2
    fi
    if ! "${VENV}/bin/python" -m pip install -q -e "${ROOT}" >&2; then
        echo "error: installing the CLI failed; see the pip output above (or run \`make -C ${ROOT} install\`)" >&2
        exit 1
    fi
fi

exec "${CLI}" "$@"
