# Sourced by the PostgreSQL benchmarks: start_throwaway_postgres starts a cluster with
# PostgreSQL's durable defaults (fsync, synchronous_commit on) in a temporary directory,
# on a free loopback port, as the postgres user when run as root (PostgreSQL refuses
# root), and removes it when the sourcing script exits. It sets:
#   PG_BIN   the newest installed PostgreSQL's bin directory
#   PG_DIR   the cluster's directory (data, log, socket)
#   PG_PORT  its port
#   PG_URL   postgresql://postgres@127.0.0.1:PORT/postgres
# Installs PostgreSQL first when missing (scripts/install-postgres.sh).

start_throwaway_postgres() {
  "$(dirname "${BASH_SOURCE[0]}")/install-postgres.sh" >/dev/null
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  PG_DIR="$(mktemp -d /tmp/fenced-pg-bench-XXXXXX)"
  PG_AS=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  trap stop_throwaway_postgres EXIT
  PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  (cd "$PG_DIR" && "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >/dev/null)
  (cd "$PG_DIR" && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null)
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop_throwaway_postgres() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
