#!/usr/bin/env bash
# Installs Debian's chromium when it is missing: the studio page's browser tests (test/browser/) drive
# /usr/bin/chromium headless through Playwright, which downloads no browser of its own. Root runs
# apt-get; anyone else gets a message and exit 2, which the tests report as a skip.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is not installed and this user cannot install it (apt-get install chromium)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-liberation: a sans-serif font that the page's text renders in (without any font, glyphs are boxes)
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
test -x /usr/bin/chromium
