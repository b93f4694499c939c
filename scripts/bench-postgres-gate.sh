#!/usr/bin/env bash
# Measures the cost of the PostgreSQL gate (pg-gate/examples/pg_gate_cost.rs): guarded
# transactions against the same transactions without the check, at 1, 16 and 64
# writers, on a one-row body and a five-statement one. Starts a throwaway cluster (scripts/lib-postgres.sh: PostgreSQL's durable
# defaults, installed when missing), runs the example in release mode and removes the
# cluster. Prints a Markdown table for BENCHMARKS.md.
#
# Usage: scripts/bench-postgres-gate.sh [seconds per cell, default 12]
#        [bodies: one-row, five-statement or both comma-separated, default both]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-12}"
bodies="${2:-one-row,five-statement}"

. scripts/lib-postgres.sh
cargo build --release -p fenced-gate-postgres --example pg_gate_cost
start_throwaway_postgres

target="${CARGO_TARGET_DIR:-target}"
"$target/release/examples/pg_gate_cost" "$PG_URL" "$seconds" "$bodies"
