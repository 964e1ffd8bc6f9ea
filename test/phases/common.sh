# Sourced by the phase scripts: where the project is, which python runs pytest, exit-code mapping.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TESTS_DIR="${TESTS_DIR:-${ROOT}/test}"

if [[ -n "${TEST_PYTHON:-}" ]]; then
    PY="${TEST_PYTHON}"
elif [[ -x "${ROOT}/.venv/bin/python" ]]; then
    PY="${ROOT}/.venv/bin/python"
else
    PY="python3"
fi

# run_pytest <dir> [pytest args...]: pytest's "no tests collected" (5) becomes the contract's 2.
run_pytest() {
    local dir="$1"
    shift
    if [[ ! -d "${dir}" ]]; then
        echo "no tests: ${dir} does not exist" >&2
        return 2
    fi
    (cd "${ROOT}" && "${PY}" -m pytest "${dir}" -p no:cacheprovider "$@")
    local rc=$?
    case ${rc} in
        0) return 0 ;;
        5) echo "no tests collected in ${dir}" >&2; return 2 ;;
        *) return 1 ;;
    esac
}
