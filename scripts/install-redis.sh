#!/usr/bin/env bash
# Installs Redis (redis-server, redis-cli) from Debian's packages, for the benchmark against
# Redis. Idempotent: does nothing when both binaries are already on PATH. Starts nothing (see
# lib-apt.sh): the benchmark starts its own Redis on loopback, in a temporary data dir.
set -euo pipefail
. "$(dirname "$0")/lib-apt.sh"

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  echo "redis already installed: $(redis-server --version)"
  exit 0
fi
apt_install redis-server redis-tools
echo "redis installed: $(redis-server --version)"
