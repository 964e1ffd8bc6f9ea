#!/usr/bin/env bash
# The docker phase: the server image built and driven through the CLI's docker runtime, for real.
#   1. a Docker engine (test/docker/ensure-engine.sh: installs docker.io, starts dockerd);
#   2. the base image: DOCKER_TEST_BASE_IMAGE, else audiocraft-base:bookworm made with debootstrap
#      (test/docker/build-base.sh; reused when present: no image registry is needed);
#   3. the image, built by `resource-audiocraft --runtime docker manage install --force` (the layer
#      cache makes a rebuild after a code change take seconds);
#      then untagged leftovers of earlier runs are removed (test/docker/prune-stale.py);
#   4. pytest test/docker: start --wait with tiny models mounted, music through the container's port,
#      status --json, logs, restart, stop (0, then 2), uninstall.
# Exit 0 pass, 1 fail, 2 skipped (no way to run a Docker engine here; the reason is printed).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export AUDIOCRAFT_IMAGE="${DOCKER_TEST_IMAGE:-resource-audiocraft:test}"
export AUDIOCRAFT_TORCH="${DOCKER_TEST_TORCH:-cpu}"
export DOCKER_PHASE=1
BASE="${DOCKER_TEST_BASE_IMAGE:-audiocraft-base:bookworm}"
CLI="$(dirname "${PY}")/resource-audiocraft"
[[ -x "${CLI}" ]] || CLI="${PY} -m cli.main"
TIMES="${ROOT}/.cache/docker-phase-times.txt"
mkdir -p "${ROOT}/.cache"

skipped() {
    echo "docker phase SKIPPED: $*" >&2
    exit 2
}
stamp() { date +%s; }

t0=$(stamp)
reason="$(bash "${ROOT}/test/docker/ensure-engine.sh" 2>&1)"
rc=$?
echo "${reason}" | sed '/^$/d' >&2
if [[ ${rc} -ne 0 ]]; then
    skipped "$(echo "${reason}" | tail -1)"
fi
t_engine=$(($(stamp) - t0))

t0=$(stamp)
if [[ -z "${DOCKER_TEST_BASE_IMAGE:-}" ]] && ! docker image inspect "${BASE}" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/tmp/apt-debootstrap.log 2>&1 \
                || skipped "cannot install debootstrap to build the base image (see /tmp/apt-debootstrap.log)"
        else
            skipped "no base image ${BASE} and no debootstrap (needs root and apt-get) to build one"
        fi
    fi
    bash "${ROOT}/test/docker/build-base.sh" "${BASE}" || exit 1
else
    echo "base image ${BASE}: present" >&2
fi
t_base=$(($(stamp) - t0))

t0=$(stamp)
echo "building ${AUDIOCRAFT_IMAGE} (BASE_IMAGE=${BASE}, TORCH=${AUDIOCRAFT_TORCH}) ..." >&2
BUILD_LOG="${ROOT}/.cache/docker-build.log"
if ! AUDIOCRAFT_BASE_IMAGE="${BASE}" ${CLI} --runtime docker manage install --force >"${BUILD_LOG}" 2>&1; then
    tail -40 "${BUILD_LOG}" >&2
    echo "the image build failed; the whole log: ${BUILD_LOG}" >&2
    exit 1
fi
grep -E "^(building|  build context|built )" "${BUILD_LOG}" >&2
t_build=$(($(stamp) - t0))
# Earlier runs' leftovers (untagged final images and build stages on our own base) go; the layer
# cache of the next build stays.
if [[ -z "${DOCKER_TEST_BASE_IMAGE:-}" ]]; then
    "${PY}" "${ROOT}/test/docker/prune-stale.py" "${AUDIOCRAFT_IMAGE}" "${BASE}" || true
fi
size=$(docker image inspect -f '{{.Size}}' "${AUDIOCRAFT_IMAGE}")

t0=$(stamp)
run_pytest "${TESTS_DIR}/docker" -q --durations=5 "$@"
rc=$?
t_tests=$(($(stamp) - t0))

summary="$(date '+%Y-%m-%d %H:%M:%S') engine ${t_engine}s, base ${t_base}s, build ${t_build}s, tests ${t_tests}s; image ${AUDIOCRAFT_IMAGE} $((size / 1000000)) MB"
echo "docker phase: ${summary}" >&2
echo "${summary}" >>"${TIMES}"
exit ${rc}
