#!/usr/bin/env bash
# Integration tests: the real CLI and server processes (they start their own on free ports).
# Exit 0 pass, 1 fail, 2 none.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_pytest "${TESTS_DIR}/integration" -q "$@"
