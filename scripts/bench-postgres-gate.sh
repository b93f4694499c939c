#!/usr/bin/env bash
# Measures the cost of the PostgreSQL gate (pg-gate/examples/pg_gate_cost.rs): guarded
# transactions against the same transactions without the check, at 1, 16 and 64
# writers. Installs PostgreSQL when missing (scripts/install-postgres.sh), starts a
# throwaway cluster on a loopback port in a temporary directory with PostgreSQL's durable
# defaults (fsync, synchronous_commit on), runs the example in release mode and removes
# the cluster. Prints a Markdown table for BENCHMARKS.md.
#
# Usage: scripts/bench-postgres-gate.sh [seconds per cell, default 12]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-12}"

scripts/install-postgres.sh >/dev/null
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
cargo build --release -p fenced-gate-postgres --example pg_gate_cost

dir="$(mktemp -d /tmp/fenced-pg-bench-XXXXXX)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi
stop() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$dir" && "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null)
(cd "$dir" && "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null)

target="${CARGO_TARGET_DIR:-target}"
"$target/release/examples/pg_gate_cost" "postgresql://postgres@127.0.0.1:$port/postgres" "$seconds"
