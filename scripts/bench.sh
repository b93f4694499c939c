#!/usr/bin/env bash
# Benchmarks fenced against etcd and Redis on this machine and writes BENCHMARKS.md.
#
# From a fresh clone: installs etcd and Redis (Debian packages, skipped when present),
# builds fenced and fenced-bench in release mode, starts the three servers on loopback
# ports with temporary data directories (each at its durable setting, below, checked once
# started), runs fenced-bench and writes the report. fenced is driven over the gRPC
# `Session` stream (the SDK's default, the headline), unary calls and the framed listener,
# each a system of its own; every cell (a workload at one size) runs three times, the
# systems rotating, and the report gives the median and range. A full run takes about half
# an hour on 2 cores.
#
# Usage: scripts/bench.sh [--quick] [fenced-bench flags...]
#   --quick   one run per cell, shorter phases, fewer sizes (a few minutes; for checking a
#             change, not for publishing). Flags after it override its choices.
#   Other flags go to fenced-bench (later ones win), e.g. `--duration-secs 10`, `--repeats 5`,
#   `--fenced-transports session` (see `target/release/fenced-bench --help`).
#
# Environment:
#   SYSTEMS   which systems to run (default fenced,etcd,redis)
#   FENCED_TLS=1  fenced serves TLS on both listeners (a throwaway CA and certificate made
#             with openssl), and the benchmark verifies it: the cost of TLS. etcd and Redis
#             stay plaintext, so the ratios to them then include that cost
#   OUT       where to write the report (default BENCHMARKS.md at the repository root)
#   BENCH_TMP parent of the temporary data directories (default $TMPDIR or /tmp); the
#             fdatasync probe runs there too. A tmpfs is refused: its fsync costs nothing
#   BENCH_PROFILE=debug  use debug builds (for trying the script; the report says so)
#
# Durability of each system, all "acknowledged means on disk", checked after start:
#   fenced: answers a grant only after its journal record is fdatasynced (CONTRACT S2); no
#           FENCED_* variable reaches it (FENCED_NO_FDATASYNC would turn the sync off).
#   etcd:   its default: every raft entry is fsynced to the WAL before it commits.
#   Redis:  appendonly yes, appendfsync always (fsync of the AOF before replying).
# bench/analysis.md (what limits each workload) is appended to the report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

systems=",${SYSTEMS:-fenced,etcd,redis},"
want() { [[ "$systems" == *",$1,"* ]]; }
out=${OUT:-$root/BENCHMARKS.md}
profile=${BENCH_PROFILE:-release}
fenced_tls=${FENCED_TLS:-}

log() { echo "bench.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --quick: a preset placed before the caller's flags, which fenced-bench lets override it.
preset=()
args=()
for arg in "$@"; do
  if [ "$arg" = --quick ]; then
    preset=(--repeats 1 --duration-secs 2 --warmup-ms 300 --clients 1,16 --expiry-pairs 1,16
      --fenced-keepalive 10000 --etcd-keepalive 10000 --keepalive-window-secs 4
      --serial-probe-secs 1)
  else
    args+=("$arg")
  fi
done
case "$profile" in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) die "BENCH_PROFILE must be release or debug, not $profile" ;;
esac

# ---- the same durability for every system
# The data directories' filesystem: fsync on a tmpfs returns at once, which would compare
# memory with disks.
parent=${BENCH_TMP:-${TMPDIR:-/tmp}}
[ -d "$parent" ] || die "BENCH_TMP=$parent is not a directory"
fs_type=$(stat -f -c %T "$parent")
case "$fs_type" in
  tmpfs|ramfs) die "$parent is on $fs_type: fsync there costs nothing, so the durable systems would not be measured durably; set BENCH_TMP to a directory on disk" ;;
esac
# The filesystem's own name for the report (stat -f says "ext2/ext3" for ext4).
fs_name=$(findmnt -n -o FSTYPE -T "$parent" 2>/dev/null || true)
fs_name=${fs_name:-$fs_type}
# fenced reads its flags from FENCED_* variables too: none may reach it (FENCED_NO_FDATASYNC
# would turn its sync off). FENCED_TLS is this script's own and was read above.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^FENCED_' || true)

# ---- install and build
# The version of the source the build below compiles: read before it, so edits made while
# the benchmark runs (and the report itself, which may be a file in this repository) do
# not count.
fenced_version="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
if want etcd; then bash scripts/install-etcd.sh >&2; fi
if want redis; then bash scripts/install-redis.sh >&2; fi
packages=(-p fenced-bench)
if want fenced; then packages+=(-p fenced); fi
log "building ${packages[*]} ($profile)"
cargo build "${build_flags[@]}" "${packages[@]}" >&2
bin=target/$profile

# ---- servers, stopped (by pid) whatever happens
tmp=$(mktemp -d "$parent/fenced-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

. scripts/lib-bench.sh

bench_args=(--sync-dir "$tmp")
commands=()
durability=()

# cmdline_has PID FLAG: whether the process was started with FLAG.
cmdline_has() { tr '\0' '\n' <"/proc/$1/cmdline" | grep -qx -- "$2"; }
# environ_fenced PID: the FENCED_* variables in the process's environment, if any.
environ_fenced() { tr '\0' '\n' <"/proc/$1/environ" | grep '^FENCED_' || true; }

if want fenced; then
  mkdir -p "$tmp/fenced"
  fenced_cmd=("$bin/fenced" --listen 127.0.0.1:0 --session-listen 127.0.0.1:0 --data-dir "$tmp/fenced/data")
  fenced_scheme=http
  if [ "$fenced_tls" = 1 ]; then
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
  # Every transport runs (the gRPC Session, unary calls, the framed listener), each a
  # system of its own; --fenced-transports narrows them.
  bench_args+=(--fenced "$fenced_scheme://$fenced_addr" --fenced-pid "$fenced_pid" --fenced-framed "$fenced_sessions")
  if cmdline_has "$fenced_pid" --no-fdatasync; then die "fenced was started with --no-fdatasync"; fi
  leaked=$(environ_fenced "$fenced_pid")
  if [ -n "$leaked" ]; then die "fenced's environment has $leaked"; fi
  durability+=("fenced: started without \`--no-fdatasync\` and with no \`FENCED_*\` variable in its environment (read back from /proc/$fenced_pid/cmdline and environ): every journal append is fdatasynced before the answer.")
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
  if cmdline_has "$etcd_pid" --unsafe-no-fsync || cmdline_has "$etcd_pid" --unsafe-no-fsync=true; then
    die "etcd was started with --unsafe-no-fsync"
  fi
  if etcd --help 2>&1 | grep -q -- --unsafe-no-fsync; then
    etcd_fsync="started without \`--unsafe-no-fsync\` (read back from /proc/$etcd_pid/cmdline)"
  else
    etcd_fsync="this etcd has no flag to turn its WAL fsync off (\`etcd --help\` lists no \`--unsafe-no-fsync\`)"
  fi
  durability+=("etcd: $etcd_fsync: every raft entry is fsynced to the WAL before it commits.")
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
  redis_config=$(redis-cli -h 127.0.0.1 -p "$redis_port" config get appendonly | paste -sd' ')
  redis_config+=", $(redis-cli -h 127.0.0.1 -p "$redis_port" config get appendfsync | paste -sd' ')"
  [ "$redis_config" = "appendonly yes, appendfsync always" ] || die "Redis answers $redis_config"
  durability+=("Redis: \`CONFIG GET\` answers \`$redis_config\`: the AOF is fsynced before every reply.")
  commands+=("$(show_cmd "${redis_cmd[@]}")")
  log "redis (pid $redis_pid) on 127.0.0.1:$redis_port"
fi

# ---- run
bench_cmd=("$bin/fenced-bench" "${bench_args[@]}" "${preset[@]}" "${args[@]}")
log "running: ${bench_cmd[*]}"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
began=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"${bench_cmd[@]}" >"$tmp/report.md"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
took=$(( (SECONDS - began + 30) / 60 ))
if ((took == 0)); then took="under a minute"; else took="about $took minutes"; fi

# ---- write the report
# The cluster section (written by scripts/bench-failover.sh, between its two marker lines)
# is kept when this script rewrites the report.
cluster_section=""
if [ -f "$out" ]; then
  cluster_section=$(sed -n '/^<!-- cluster-section:begin/,/^<!-- cluster-section:end/p' "$out")
fi
# The command as given: the script, its flags, and the environment that changes the run.
script_cmd="bash scripts/bench.sh"
for arg in "$@"; do script_cmd+=" $(show_cmd "$arg")"; done
if [ "${SYSTEMS:-}" != "" ]; then script_cmd="SYSTEMS=$SYSTEMS $script_cmd"; fi
if [ "$fenced_tls" = 1 ]; then script_cmd="FENCED_TLS=1 $script_cmd"; fi
if [ "$profile" != release ]; then script_cmd="BENCH_PROFILE=$profile $script_cmd"; fi
{
  echo "# Benchmarks: fenced, etcd and Redis"
  echo
  echo "Generated by \`$script_cmd\` (rerun it to refresh this file; do not edit by hand). The run took $took."
  echo
  echo "## Machine and versions"
  echo
  echo "- Date: $started"
  echo "- Cores: $(nproc); memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
  echo "- Kernel: $(uname -r); data directories on: $(df -P "$tmp" | awk 'NR == 2 {print $1}') ($fs_name)"
  echo "- Load average (1, 5, 15 min) before the run: $load_before; after: $load_after (other work on the machine slows every system; the rotating order spreads it over all of them)"
  echo "- fenced: $fenced_version, $profile build; $(rustc --version)"
  if want etcd; then echo "- etcd: $(etcd --version | head -n1 | sed 's/^etcd Version: //') (Debian package)"; fi
  if want redis; then echo "- Redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (Debian package)"; fi
  echo
  echo "All servers and the benchmark client share the machine's cores; every connection is loopback."
  echo
  echo "## Durability, as started"
  echo
  echo "The data directories are on $fs_name (a tmpfs is refused)."
  echo
  for line in "${durability[@]}"; do echo "- $line"; done
  echo
  echo "## How each system is driven"
  echo
  if want fenced; then
    echo "- fenced, three ways, each a system of its own in the tables: over one gRPC \`Session\` stream per client (**fenced (gRPC Session)**: the SDK's default, the headline); over unary \`Acquire\` and \`Release\` calls (**fenced (unary gRPC)**: what a client in any other language makes); and over one connection per client to the framed session listener (**fenced (framed)**: \`fenced --session-listen\`, the \`Session\` messages in length-prefixed frames without HTTP/2, opt-in). Protobuf through the generated client, no SDK. cycle: one \`Acquire\` (new lease, TTL 10 s) and one \`Release\` of that lease; contended: \`Acquire\` with \`wait_ms\` (the server's FIFO queue); expiry: the holder's \`Acquire\` with a 2 s TTL, never renewed. keepalive (the same whatever the transport, so run once as **fenced**): leases and locks created with unary \`Acquire\` calls, one-lease-many-locks via \`Acquire\` with \`lease_id\`, renewed over \`KeepAlive\` streams, each carrying many leases."
  fi
  if want etcd; then echo "- etcd: its Lease and Lock gRPC services, as etcd's \`concurrency\` package uses them: each client grants one session lease (TTL 10 s) when it connects and keeps it alive in the background; a grant is one \`Lock\` on that lease, a release one \`Unlock\` (no lease grant or revoke per cycle: etcd's most favourable mode). \`Lock\` always queues (FIFO by revision). The expiry holder grants a fresh lease per round and never renews it."; fi
  if want redis; then echo "- Redis: \`SET lock value NX PX 10000\` + \`INCR\` of a token counter in one Lua script, released by a compare-and-delete script; a waiter retries after a random pause (no queue). The expiry holder sets its key with \`PX 2000\` and never extends it."; fi
  if want fenced && [ "$fenced_tls" = 1 ]; then echo "- fenced over TLS (\`FENCED_TLS=1\`): both of its listeners serve TLS with a throwaway certificate, and every connection verifies it; etcd and Redis stay plaintext, so the ratios to them include fenced's cost of TLS."; fi
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
  if [ -n "$cluster_section" ]; then
    echo
    echo "$cluster_section"
  fi
  if [ -f bench/analysis.md ]; then
    echo
    cat bench/analysis.md
  fi
} >"$out"
log "wrote $out"
