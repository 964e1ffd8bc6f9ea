#!/usr/bin/env bash
# The audioseal package (the AudioSeal oracle), beside the audiocraft oracle's venv, without touching
# it: `pip install --no-deps --target`, imported through PYTHONPATH by that venv's python (audioseal
# 0.2.0 needs only torch, numpy, omegaconf and einops at run time, which the venv has; it does not
# import torchaudio). Separate from setup-env.sh so that adding it does not rebuild the venv.
# Prints the venv's python, then the package folder (for PYTHONPATH), on the last two lines.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$(bash "$here/setup-env.sh" | tail -n 1)"
env_dir="${AUDIOCRAFT_ORACLE_ENV:-$HOME/.cache/audiocraft-oracle/venv}"
version="0.2.0"
target="$(dirname "$env_dir")/audioseal-$version"
stamp="$target/.installed"
if [[ ! -f "$stamp" ]]; then
  rm -rf "$target"
  "$python" -m pip install -q --disable-pip-version-check --no-deps --target "$target" "audioseal==$version" >&2
  PYTHONPATH="$target" NO_TORCH_COMPILE=1 "$python" -c 'from audioseal import AudioSeal' >&2
  touch "$stamp"
fi
echo "$python"
echo "$target"
