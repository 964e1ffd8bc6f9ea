#!/usr/bin/env bash
# The contract's `cli.sh`: the same as manage.sh (installs the CLI when missing), every argument
# handed to `resource-audiocraft`. The platform runs it through a symlink
# (`~/.local/bin/resource-audiocraft -> <repo>/cli.sh`): the links are followed to find the repo.
set -euo pipefail
here="${BASH_SOURCE[0]}"
while [[ -L "${here}" ]]; do
    dir="$(cd -P "$(dirname "${here}")" && pwd)"
    here="$(readlink "${here}")"
    [[ "${here}" == /* ]] || here="${dir}/${here}"
done
exec "$(cd -P "$(dirname "${here}")" && pwd)/manage.sh" "$@"
