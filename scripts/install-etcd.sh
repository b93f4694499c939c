#!/usr/bin/env bash
# Installs etcd (server and etcdctl) from Debian's packages, for the benchmark against etcd.
# Idempotent: does nothing when both binaries are already on PATH. Starts nothing: Debian's
# package would start a system service, which a policy-rc.d that answers 101 forbids (the
# benchmark starts its own etcd on loopback, in a temporary data dir).
set -euo pipefail
. "$(dirname "$0")/lib-apt.sh"

if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
  echo "etcd already installed: $(etcd --version 2>/dev/null | head -n1)"
  exit 0
fi
apt_install etcd-server etcd-client
echo "etcd installed: $(etcd --version 2>/dev/null | head -n1)"
