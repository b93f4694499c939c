#!/usr/bin/env bash
# What one more statement costs a PostgreSQL transaction, and what each form of the
# gate's check costs: pgbench, 16 clients, each on rows and a resource of its own, every
# transaction `BEGIN; <extra>; <body>; COMMIT` with BEGIN, the extra statement and the
# body pipelined (one round trip, as GuardedClient::begin_executing sends its first
# statement) and COMMIT on its own. Two bodies: one row update (the cheapest write), and
# five statements shaped like pgbench's TPC-B transaction (three row updates, a read, an
# insert) on the client's own rows. The extra statement is, in turn: none (the write
# without the gate), `SELECT 1` (the cost of a statement as such), a locking read of the
# mark row (the least a check that locks the mark can do), KEEP_MARK and RAISE_MARK
# (pg-gate/src/check.rs, copied from there) and `SELECT fenced_check(..)` (fenced.sql).
# Every token equals its resource's mark: a holder's steady state. Each round runs every
# variant for the given seconds, one after the other; a variant's ratio is its rate over
# the no-check rate of the same round. Prints the median and range over the rounds.
#
# Usage: scripts/bench-postgres-check.sh [rounds, default 6] [seconds per variant, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-6}"
seconds="${2:-5}"
clients=16
. scripts/lib-postgres.sh
start_throwaway_postgres

psql=("$PG_BIN/psql" -q -v ON_ERROR_STOP=1 "$PG_URL")
"${psql[@]}" --single-transaction -f pg-gate/sql/fenced.sql >/dev/null
"${psql[@]}" -c "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL);
  INSERT INTO orders SELECT g, 'new', 1 FROM generate_series(0, $clients - 1) g;
  CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
  CREATE TABLE tellers (id int PRIMARY KEY, balance bigint NOT NULL);
  CREATE TABLE branches (id int PRIMARY KEY, balance bigint NOT NULL);
  CREATE TABLE history (teller int, branch int, account int, delta int, at timestamptz);
  INSERT INTO accounts SELECT g, 0 FROM generate_series(0, $clients - 1) g;
  INSERT INTO tellers SELECT g, 0 FROM generate_series(0, $clients - 1) g;
  INSERT INTO branches SELECT g, 0 FROM generate_series(0, $clients - 1) g;
  INSERT INTO fenced_marks SELECT 'bench-' || g, 1 FROM generate_series(0, $clients - 1) g;"

# report RESULTS: one body's table, from lines "round<TAB>variant<TAB>tps".
report() {
  python3 - "$1" "${names[@]}" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
names = sys.argv[2:]
rates = {}
for round_, name, tps in rows:
    rates.setdefault(round_, {})[name] = float(tps)
print("| extra statement | transactions/s, median (range) | ÷ no check, median (range) |")
print("|--|--:|--:|")
for name in names:
    tps = [r[name] for r in rates.values()]
    ratio = [r[name] / r[names[0]] for r in rates.values()]
    print(f"| {name} | {statistics.median(tps):,.0f} ({min(tps):,.0f}-{max(tps):,.0f}) "
          f"| {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |")
PY
}

# rust_const NAME: the statement NAME of pg-gate/src/check.rs, as the crate spells it.
rust_const() {
  python3 - "$1" <<'PY'
import re, sys
source = open("pg-gate/src/check.rs").read()
body = re.search(r'pub const %s: &str = "(.*?)";' % sys.argv[1], source, re.S).group(1)
print(re.sub(r"\\\n\s*", "", body))
PY
}
resource="('bench-' || :client_id)"
bind() { sed "s/\$1/$resource/g; s/\$2/1::bigint/g"; }
scripts="$PG_DIR/scripts"
mkdir -p "$scripts"
one_row="UPDATE orders SET status = 'paid', written_by = 1 WHERE id = :client_id;"
five="\\set delta random(-5000, 5000)
UPDATE accounts SET balance = balance + :delta WHERE id = :client_id;
SELECT balance FROM accounts WHERE id = :client_id;
UPDATE tellers SET balance = balance + :delta WHERE id = :client_id;
UPDATE branches SET balance = balance + :delta WHERE id = :client_id;
INSERT INTO history VALUES (:client_id, :client_id, :client_id, :delta, CURRENT_TIMESTAMP);"
# variant BODY NAME EXTRA: the script `$scripts/BODY-NAME.sql`.
variant() {
  local body="$1" name="$2" extra="$3" statements
  [ "$body" = one-row ] && statements="$one_row" || statements="$five"
  {
    echo "$statements" | grep '^\\set' || true
    echo '\startpipeline'
    echo 'BEGIN;'
    [ -n "$extra" ] && echo "$extra;"
    echo "$statements" | grep -v '^\\set'
    echo '\endpipeline'
    echo 'COMMIT;'
  } > "$scripts/$body-$name.sql"
}
names=("no check" "SELECT 1" "locking read" "KEEP_MARK" "RAISE_MARK" "fenced_check")
for body in one-row five-statement; do
  variant "$body" "no check" ""
  variant "$body" "SELECT 1" "SELECT 1"
  variant "$body" "locking read" "SELECT token FROM fenced_marks WHERE resource = $resource FOR NO KEY UPDATE"
  variant "$body" "KEEP_MARK" "$(rust_const KEEP_MARK | bind)"
  variant "$body" "RAISE_MARK" "$(rust_const RAISE_MARK | bind)"
  variant "$body" "fenced_check" "SELECT fenced_check($resource, 1)"
done
chmod -R a+rX "$PG_DIR"

for body in one-row five-statement; do
  results="$PG_DIR/results-$body"
  : > "$results"
  for round in $(seq "$rounds"); do
    for name in "${names[@]}"; do
      tps="$("$PG_BIN/pgbench" -n -M prepared -c "$clients" -j 1 -T "$seconds" \
        -f "$scripts/$body-$name.sql" "$PG_URL" 2>&1 | awk '/^tps/ {print $3}')"
      [ -n "$tps" ] || { echo "pgbench failed on $body '$name'" >&2; exit 1; }
      printf '%s\t%s\t%s\n' "$round" "$name" "$tps" >> "$results"
    done
  done
  echo
  echo "pgbench, $clients clients, $body transactions, $rounds rounds of $seconds s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  report "$results"
done

