#!/usr/bin/env bash
# Installs Debian's chromium when it is missing: the studio page's browser tests (test/browser/) drive
# /usr/bin/chromium headless through Playwright, which downloads no browser of its own. Exit 2 (this
# user cannot install it) makes those tests skip and say why.
# fonts-liberation: a sans-serif font for the page's text (without any font, glyphs are boxes).
set -euo pipefail
exec bash "$(dirname "$0")/../ensure-apt.sh" /usr/bin/chromium chromium fonts-liberation
