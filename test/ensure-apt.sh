#!/usr/bin/env bash
# ensure-apt.sh PROGRAM PACKAGE...: installs Debian's PACKAGEs when PROGRAM (a command name or a path)
# is missing. Root runs apt-get; anyone else gets a message and exit 2, which the tests that need
# PROGRAM report as a skip. Nothing is started here.
set -euo pipefail

program=$1
shift
if command -v "$program" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$program is not installed and this user cannot install it (apt-get install $*)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
command -v "$program" >/dev/null
