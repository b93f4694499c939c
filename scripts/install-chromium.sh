#!/usr/bin/env bash
# Installs Chromium and ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver) from Debian's
# packages, for the status page's browser test (tests/tests/status_page.rs). Idempotent: does
# nothing when both are already there. Starts nothing (see lib-apt.sh): the test starts its
# own headless Chromium and ChromeDriver on loopback.
set -euo pipefail
. "$(dirname "$0")/lib-apt.sh"

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
  exit 0
fi
apt_install chromium chromium-driver
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
echo "chromedriver installed: $(/usr/bin/chromedriver --version 2>/dev/null || true)"
