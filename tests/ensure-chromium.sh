#!/usr/bin/env bash
# Debian's Chromium, for the report's browser tests (tests/integration/test_report_browser.py).
# Idempotent: does nothing when /usr/bin/chromium exists. playwright (the `test` extra) drives
# this system browser; `playwright install` is never run, since it downloads browser builds of
# its own, which a machine that reaches only the package registries cannot fetch.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "ensure-chromium: installing Debian's chromium" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
