#!/usr/bin/env bash
# Creates (or reuses) the audiocraft oracle's virtual environment, outside the repository.
# Prints the environment's python on the last line of stdout.
#   AUDIOCRAFT_ORACLE_ENV   where the venv lives (default ~/.cache/audiocraft-oracle/venv)
#   AUDIOCRAFT_ORACLE_PYTHON  the interpreter to build it from (default: python3.11, else python3)
# A stamp file holding the hash of requirements-oracle.txt (and of this script) marks a finished
# install, so a second run with the same requirements costs nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="${AUDIOCRAFT_ORACLE_ENV:-$HOME/.cache/audiocraft-oracle/venv}"
reqs="$here/requirements-oracle.txt"
stamp="$env_dir/.oracle-installed"
want="$(cat "$reqs" "$0" | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$env_dir/bin/python"
  exit 0
fi

base_python="${AUDIOCRAFT_ORACLE_PYTHON:-}"
if [[ -z "$base_python" ]]; then
  base_python="$(command -v python3.11 || command -v python3)"
fi
"$base_python" -c 'import sys; assert sys.version_info[:2] in ((3, 9), (3, 10), (3, 11)), \
  "audiocraft 1.3.0 with torch 2.1.0 needs Python 3.9 to 3.11, not %s" % sys.version.split()[0]'

# A half-finished install is started over: pip state after an interrupted run is not trustworthy.
rm -rf "$env_dir"
mkdir -p "$(dirname "$env_dir")"
"$base_python" -m venv "$env_dir"
py="$env_dir/bin/python"
pip=("$py" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip >&2
# torch's CPU wheel from PyPI carries CUDA libraries on Linux; it is what audiocraft pins.
step1=$(grep -vE '^\s*(#|$)' "$reqs" | sed -n '1,4p')
step3=$(grep -vE '^\s*(#|$)' "$reqs" | sed -n '5,$p')
# shellcheck disable=SC2086
"${pip[@]}" $step1 >&2
"${pip[@]}" --no-deps "audiocraft==1.3.0" >&2
# Step 3 must not move torch or numpy: pin them again as constraints.
constraints="$env_dir/constraints.txt"
printf '%s\n' $step1 > "$constraints"
# shellcheck disable=SC2086
"${pip[@]}" -c "$constraints" $step3 >&2
"$py" -c 'from audiocraft.models import MusicGen, AudioGen, builders' >&2
echo "$want" > "$stamp"
echo "$py"
