#!/usr/bin/env bash
# Make a Docker engine answer, for the docker test phase:
#   1. `docker info` answers: done;
#   2. no dockerd: install Debian's docker.io with apt-get (root only);
#   3. start dockerd in the background (log: $DOCKERD_LOG), first with its defaults, then, if it does
#      not come up, with --iptables=false --ip6tables=false (sandboxes without netfilter), then also
#      with the vfs storage driver (no overlayfs).
# Exit 0 when an engine answers; 2 (the contract's "skipped") when there is no way to get one, with
# the reason on stderr; nothing here exits 1.
set -uo pipefail

LOG="${DOCKERD_LOG:-/var/log/resource-audiocraft-dockerd.log}"
WAIT_S="${DOCKERD_WAIT_S:-40}"

skip() {
    echo "no Docker engine: $*" >&2
    exit 2
}

answers() { timeout 10 docker info >/dev/null 2>&1; }

wait_engine() {
    local pid="$1" i
    for ((i = 0; i < WAIT_S * 2; i++)); do
        answers && return 0
        kill -0 "${pid}" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

command -v docker >/dev/null 2>&1 && answers && exit 0

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || skip "dockerd is not installed and installing docker.io needs root"
    command -v apt-get >/dev/null 2>&1 || skip "dockerd is not installed and there is no apt-get to install docker.io"
    echo "installing docker.io with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q docker.io >/tmp/apt-docker.io.log 2>&1; then
        apt-get update -q >>/tmp/apt-docker.io.log 2>&1
        apt-get install -y -q docker.io >>/tmp/apt-docker.io.log 2>&1 \
            || skip "apt-get install docker.io failed (see /tmp/apt-docker.io.log)"
    fi
fi
command -v dockerd >/dev/null 2>&1 || skip "no dockerd after installing docker.io"

[[ $(id -u) -eq 0 ]] || skip "the Docker engine is not running and starting dockerd needs root"
if pgrep -x dockerd >/dev/null 2>&1; then
    # A dockerd that does not answer: give it a moment (it may be starting), then report.
    for _ in $(seq 1 20); do answers && exit 0; sleep 0.5; done
    skip "dockerd runs but does not answer (see its log)"
fi

mkdir -p "$(dirname "${LOG}")" 2>/dev/null || LOG=/tmp/resource-audiocraft-dockerd.log
attempts=(
    ""
    "--iptables=false --ip6tables=false"
    "--iptables=false --ip6tables=false --storage-driver=vfs"
)
for flags in "${attempts[@]}"; do
    echo "starting dockerd ${flags:-(defaults)}; log: ${LOG}" >&2
    echo "=== $(date '+%Y-%m-%d %H:%M:%S') dockerd ${flags} ===" >>"${LOG}"
    # shellcheck disable=SC2086 # flags are words
    setsid nohup dockerd ${flags} >>"${LOG}" 2>&1 </dev/null &
    pid=$!
    if wait_engine "${pid}"; then
        echo "dockerd is up (pid ${pid})" >&2
        exit 0
    fi
    kill "${pid}" 2>/dev/null
    sleep 2
    kill -9 "${pid}" 2>/dev/null
    rm -f /var/run/docker.pid
done
skip "dockerd did not start with any of the tried flags (see ${LOG})"
