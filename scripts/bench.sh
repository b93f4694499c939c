#!/usr/bin/env bash
# Benchmarks fenced against etcd and Redis on this machine and writes BENCHMARKS.md.
#
# From a fresh clone: installs etcd and Redis (Debian packages, skipped when present),
# builds fenced and fenced-bench in release mode, starts the three servers on loopback
# ports with temporary data directories (each at its durable setting, below), runs
# fenced-bench (systems alternating within every workload), stops the servers and writes
# the report. Extra arguments go to fenced-bench, e.g. `scripts/bench.sh --duration-secs 10`
# (see `target/release/fenced-bench --help`).
#
# Environment:
#   SYSTEMS   which systems to run (default fenced,etcd,redis)
#   FENCED_SESSION  framed (default: fenced's framed session listener) or grpc (the gRPC
#             Session call), how the benchmark sends fenced's acquires and releases
#   FENCED_TLS=1  fenced serves TLS on both listeners (a throwaway CA and certificate made
#             with openssl), and the benchmark verifies it: the cost of TLS. etcd and Redis
#             stay plaintext, so the ratios to them then include that cost
#   OUT       where to write the report (default BENCHMARKS.md at the repository root)
#   BENCH_TMP parent of the temporary data directories (default $TMPDIR or /tmp); the
#             fdatasync probe runs there too, so keep it on the disk you mean to measure
#
# Durability of each system, all "acknowledged means on disk":
#   fenced: answers a grant only after its journal record is fdatasynced (CONTRACT S2).
#   etcd:   its default: every raft entry is fsynced to the WAL before it commits.
#   Redis:  appendonly yes, appendfsync always (fsync of the AOF before replying).
# If bench/analysis.md exists, it is appended to the report (hand-written findings that a
# rerun must not erase).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

systems=",${SYSTEMS:-fenced,etcd,redis},"
want() { [[ "$systems" == *",$1,"* ]]; }
out=${OUT:-$root/BENCHMARKS.md}

log() { echo "bench.sh: $*" >&2; }

# ---- install and build
# The version of the source the build below compiles: read before it, so edits made while
# the benchmark runs (and the report itself, which may be a file in this repository) do
# not count.
fenced_version="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
if want etcd; then bash scripts/install-etcd.sh >&2; fi
if want redis; then bash scripts/install-redis.sh >&2; fi
packages=(-p fenced-bench)
if want fenced; then packages+=(-p fenced); fi
log "building ${packages[*]} (release)"
cargo build --release "${packages[@]}" >&2

# ---- servers, stopped (by pid) whatever happens
tmp=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/fenced-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# show_cmd ARGS...: the command as a shell would need it, temporary paths shown as TMP.
show_cmd() {
  local out="" arg
  for arg in "$@"; do
    if [[ -z "$arg" ]]; then
      arg="''"
    elif [[ "$arg" =~ [^A-Za-z0-9_./:=,@+%-] ]]; then
      arg="'${arg//\'/\'\\\'\'}'"
    fi
    out+="$arg "
  done
  out=${out//$tmp/TMP}
  echo "${out% }"
}

# pick_port VAR: sets VAR to a loopback port nothing listens on, below the kernel's
# ephemeral range (so no client connection takes it meanwhile), not picked before.
used_ports=" "
pick_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    if [[ "$used_ports" != *" $port "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      printf -v "$1" '%s' "$port"
      return 0
    fi
  done
  log "no free loopback port found"; return 1
}

# wait_for SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.1
  done
}

bench_args=(--sync-dir "$tmp")
commands=()

if want fenced; then
  mkdir -p "$tmp/fenced"
  fenced_cmd=(target/release/fenced --listen 127.0.0.1:0 --session-listen 127.0.0.1:0 --data-dir "$tmp/fenced/data")
  fenced_scheme=http
  if [ "${FENCED_TLS:-}" = 1 ]; then
    command -v openssl >/dev/null || (. scripts/lib-apt.sh && apt_install openssl) >&2
    tls="$tmp/fenced/tls"; mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=fenced-bench-ca -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj /CN=127.0.0.1 -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
    fenced_cmd+=(--tls-cert "$tls/server.pem" --tls-key "$tls/server.key")
    fenced_scheme=https
    bench_args+=(--fenced-tls-ca "$tls/ca.pem")
  fi
  "${fenced_cmd[@]}" >"$tmp/fenced/stdout" 2>"$tmp/fenced/stderr" &
  fenced_pid=$!; pids+=("$fenced_pid")
  if ! wait_for 60 grep -q '^fenced listening on ' "$tmp/fenced/stdout"; then
    log "fenced did not start; its stderr:"; tail -n 20 "$tmp/fenced/stderr" >&2; exit 1
  fi
  fenced_addr=$(sed -n 's/^fenced listening on //p' "$tmp/fenced/stdout" | head -n1)
  fenced_sessions=$(sed -n 's/^fenced sessions on //p' "$tmp/fenced/stdout" | head -n1)
  # fenced's acquires and releases travel on one framed Session connection per client (its
  # fast path, as Redis is driven over its own protocol). FENCED_SESSION=grpc sends them on
  # the gRPC Session call instead, for comparison.
  if [ "${FENCED_SESSION:-framed}" = grpc ]; then
    bench_args+=(--fenced "$fenced_scheme://$fenced_addr" --fenced-pid "$fenced_pid" --fenced-session)
  else
    bench_args+=(--fenced "$fenced_scheme://$fenced_addr" --fenced-pid "$fenced_pid" --fenced-framed "$fenced_sessions")
  fi
  commands+=("$(show_cmd "${fenced_cmd[@]}")")
  log "fenced (pid $fenced_pid) on $fenced_addr"
fi

if want etcd; then
  pick_port client_port; pick_port peer_port
  etcd_cmd=(etcd --name bench --data-dir "$tmp/etcd"
    --listen-client-urls "http://127.0.0.1:$client_port"
    --advertise-client-urls "http://127.0.0.1:$client_port"
    --listen-peer-urls "http://127.0.0.1:$peer_port"
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port"
    --initial-cluster "bench=http://127.0.0.1:$peer_port"
    --initial-cluster-state new --logger zap --log-level warn)
  "${etcd_cmd[@]}" >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!; pids+=("$etcd_pid")
  if ! wait_for 60 etcdctl --endpoints "127.0.0.1:$client_port" endpoint health; then
    log "etcd did not start; its log:"; tail -n 20 "$tmp/etcd.log" >&2; exit 1
  fi
  bench_args+=(--etcd "http://127.0.0.1:$client_port" --etcd-pid "$etcd_pid")
  commands+=("$(show_cmd "${etcd_cmd[@]}")")
  log "etcd (pid $etcd_pid) on 127.0.0.1:$client_port"
fi

if want redis; then
  pick_port redis_port
  mkdir -p "$tmp/redis"
  redis_cmd=(redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$tmp/redis"
    --appendonly yes --appendfsync always --save "" --daemonize no
    --logfile "$tmp/redis.log")
  "${redis_cmd[@]}" &
  redis_pid=$!; pids+=("$redis_pid")
  if ! wait_for 30 redis-cli -h 127.0.0.1 -p "$redis_port" ping; then
    log "redis did not start; its log:"; tail -n 20 "$tmp/redis.log" >&2; exit 1
  fi
  bench_args+=(--redis "redis://127.0.0.1:$redis_port/" --redis-pid "$redis_pid")
  commands+=("$(show_cmd "${redis_cmd[@]}")")
  log "redis (pid $redis_pid) on 127.0.0.1:$redis_port"
fi

# ---- run
bench_cmd=(target/release/fenced-bench "${bench_args[@]}" "$@")
log "running: ${bench_cmd[*]}"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"${bench_cmd[@]}" >"$tmp/report.md"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- write the report
{
  echo "# Benchmarks: fenced, etcd and Redis"
  echo
  echo "Generated by \`scripts/bench.sh\` (rerun it to refresh this file; do not edit by hand)."
  echo
  echo "## Machine and versions"
  echo
  echo "- Date: $started"
  echo "- Cores: $(nproc); memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
  echo "- Kernel: $(uname -r); data directories on: $(df -P "$tmp" | awk 'NR == 2 {print $1}')"
  echo "- Load average (1, 5, 15 min) before the run: $load_before; after: $load_after (other work on the machine slows every system; running them alternately spreads it over all of them)"
  echo "- fenced: $fenced_version, release build; $(rustc --version)"
  if want etcd; then echo "- etcd: $(etcd --version | head -n1 | sed 's/^etcd Version: //') (Debian package)"; fi
  if want redis; then echo "- Redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (Debian package)"; fi
  echo
  echo "All servers and the benchmark client share the machine's cores; every connection is loopback."
  echo
  echo "## Durability"
  echo
  if want fenced; then echo "- fenced: a grant (and a release) is answered only once it is on disk: appended to the server's journal and fdatasynced (CONTRACT S2); sled receives it in the background checkpoint about once a second."; fi
  if want etcd; then echo "- etcd: default settings: every raft entry is fsynced to the WAL before it commits."; fi
  if want redis; then echo "- Redis: \`appendonly yes\`, \`appendfsync always\`: the AOF is fsynced before replies."; fi
  echo
  echo "## How each system is driven"
  echo
  echo "- fenced: acquire and release sent as \`Session\` messages (protobuf, no SDK) on one connection per client to the server's framed session listener (\`fenced --session-listen\`: the gRPC \`Session\` call's messages in length-prefixed frames, without HTTP/2; the server's fast path, as Redis is driven over its own protocol. \`FENCED_SESSION=grpc\` sends them on the gRPC \`Session\` call instead; the unary calls behave the same, slower). cycle: one \`Acquire\` (new lease, TTL 10 s) and one \`Release\` of that lease; contended: \`Acquire\` with \`wait_ms\` (the server's FIFO queue); keepalive: leases and locks created with unary \`Acquire\` calls (64 at a time over 8 connections), one-lease-many-locks via \`Acquire\` with \`lease_id\`, renewed over \`KeepAlive\` streams, each carrying many leases."
  echo "- etcd: its Lease and Lock gRPC services, as etcd's \`concurrency\` package uses them: each client grants one session lease (TTL 10 s) when it connects and keeps it alive in the background; a grant is one \`Lock\` on that lease, a release one \`Unlock\` (no lease grant or revoke per cycle: etcd's most favourable mode). \`Lock\` always queues (FIFO by revision). The expiry holder grants a fresh lease per round and never renews it."
  echo "- Redis: \`SET lock value NX PX 10000\` + \`INCR\` of a token counter in one Lua script, released by a compare-and-delete script; a waiter retries after a random pause (no queue)."
  if want fenced && [ "${FENCED_TLS:-}" = 1 ]; then echo "- fenced over TLS (\`FENCED_TLS=1\`): both of its listeners serve TLS with a throwaway certificate, and every connection verifies it; etcd and Redis stay plaintext, so the ratios to them include fenced's cost of TLS."; fi
  echo "- Every benchmark client has its own TCP connection; keepalive streams too."
  echo
  echo "## Commands"
  echo
  echo '```sh'
  for c in "${commands[@]}"; do echo "$c"; done
  show_cmd "${bench_cmd[@]}"
  echo '```'
  echo
  echo "## Results"
  echo
  cat "$tmp/report.md"
  if [ -f bench/analysis.md ]; then
    echo
    echo "## What limits it"
    echo
    cat bench/analysis.md
  fi
} >"$out"
log "wrote $out"
