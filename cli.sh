#!/usr/bin/env bash
# The contract's `cli.sh`: the same as manage.sh (installs the CLI when missing), every argument
# handed to `resource-audiocraft`.
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/manage.sh" "$@"
