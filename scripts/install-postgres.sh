#!/usr/bin/env bash
# Installs PostgreSQL (initdb, pg_ctl, postgres, psql) from Debian's packages, for the
# PostgreSQL gate's tests (tests/tests/gate_postgres.rs), which start their own throwaway
# cluster on loopback in a temporary directory. Idempotent: does nothing when an initdb is
# already in /usr/lib/postgresql/*/bin. Starts nothing (see lib-apt.sh).
set -euo pipefail
. "$(dirname "$0")/lib-apt.sh"

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "postgresql already installed: $(ls -d /usr/lib/postgresql/*/bin/initdb | tr '\n' ' ')"
  exit 0
fi
apt_install postgresql
echo "postgresql installed: $(ls -d /usr/lib/postgresql/*/bin/initdb | tr '\n' ' ')"
