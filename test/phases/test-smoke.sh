#!/usr/bin/env bash
# Smoke tests against the RUNNING service (AUDIOCRAFT_HOST / AUDIOCRAFT_PORT): health, the model
# list, a 1 s generation when a music model is installed. Within 30 s; exit 0 or 1.
# A service that is not running fails the smoke test (it skips only under SMOKE_REQUIRE_SERVICE=0).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export SMOKE_REQUIRE_SERVICE="${SMOKE_REQUIRE_SERVICE:-1}"
BUDGET="${SMOKE_BUDGET_S:-30}"
if command -v timeout >/dev/null 2>&1; then
    TIMEOUT=(timeout --kill-after=2 "${BUDGET}")
else
    TIMEOUT=()
fi
(cd "${ROOT}" && "${TIMEOUT[@]}" "${PY}" -m pytest "${TESTS_DIR}/smoke" -q -p no:cacheprovider \
    -o addopts="" --timeout=$((BUDGET - 3)) "$@")
rc=$?
case ${rc} in
    0) exit 0 ;;
    124 | 137) echo "smoke tests did not finish within ${BUDGET} s" >&2; exit 1 ;;
    *) exit 1 ;;
esac
