#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing (the Redis job queue's tests start their own
# server from it on a free loopback port; nothing is started here). Root runs apt-get; anyone else
# gets a message and exit 2, which the tests report as a skip.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/../ensure-apt.sh" redis-server redis-server
# The package starts a system service where an init system runs; the tests need none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
fi
