#!/usr/bin/env bash
# Unit tests: fast, no server. Exit 0 pass, 1 fail, 2 none.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_pytest "${TESTS_DIR}/unit" -q "$@"
