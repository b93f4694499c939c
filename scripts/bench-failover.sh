#!/usr/bin/env bash
# Benchmarks a 3-member fenced cluster against a 3-member etcd cluster on this machine and
# writes the "Cluster" section of BENCHMARKS.md (between its two marker lines, placed
# before the analysis; the rest of the file stays as bench.sh wrote it, except the analysis
# at its end, refreshed from bench/analysis.md; bench.sh keeps the section when it rewrites
# the file).
#
# From a fresh clone: installs etcd (Debian package, skipped when present), builds fenced,
# fenced-bench and fenced-failover in release mode, then:
# 1. Failover: fenced-failover starts both clusters (loopback ports, temporary data
#    directories on disk, each system at its durable default, the same election timeout),
#    kills the leader with SIGKILL KILLS times per system (the systems alternating),
#    restarts it on its data directory and waits for the cluster to be whole before the
#    next kill. Each kill is timed until a surviving member names a new leader, until a
#    free lock is granted, and until a lease held before the kill is renewed; the client
#    finds the new leader by trying every member. About 5 minutes.
# 2. Lock cycles (rows): both clusters started afresh, fenced-bench runs ROW_WORKLOADS
#    against each cluster's leader, each cell three times (systems rotating), and the report
#    gives the median and range with the fenced/etcd ratios. About 5 minutes per workload.
#
# Usage: scripts/bench-failover.sh [--quick] [fenced-bench flags for the rows...]
#   --quick   10 kills, one run per cell, shorter phases (for checking the script, not for
#             publishing). Flags after it override its choices for the rows.
#
# Environment:
#   KILLS                kills per system (default 30)
#   HEARTBEAT_MS         fenced's --heartbeat-ms (default 50, fenced's default)
#   ELECTION_TIMEOUT_MS  fenced's --election-timeout-ms and etcd's --election-timeout
#                        (default 200, fenced's default). etcd's --heartbeat-interval is
#                        HEARTBEAT_MS, lowered to ELECTION_TIMEOUT_MS / 5 when above it
#                        (etcd refuses an election timeout below five heartbeats)
#   ROW_WORKLOADS        fenced-bench workloads of the rows (default cycle,contended)
#   PARTS                failover,rows (default both)
#   OUT                  the report to update (default BENCHMARKS.md at the repository root)
#   BENCH_TMP            parent of the temporary data directories (default $TMPDIR or /tmp;
#                        a tmpfs is refused: its fsync costs nothing)
#   BENCH_PROFILE=debug  use debug builds (for trying the script; the report says so)
#   KEEP_LOGS            a directory to copy the members' logs into at the end (fenced's
#                        at RUST_LOG=info), to see elections, promotions and raft errors
#
# Durability, as in bench.sh: fenced members run without --no-fdatasync and with no
# FENCED_* variable (every raft append is fdatasynced before it counts); etcd members run
# without --unsafe-no-fsync (every raft entry is fsynced to the WAL before it commits).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

out=${OUT:-$root/BENCHMARKS.md}
profile=${BENCH_PROFILE:-release}
kills=${KILLS:-30}
heartbeat_ms=${HEARTBEAT_MS:-50}
election_ms=${ELECTION_TIMEOUT_MS:-200}
etcd_heartbeat_ms=$heartbeat_ms
if ((etcd_heartbeat_ms * 5 > election_ms)); then etcd_heartbeat_ms=$((election_ms / 5)); fi
row_workloads=${ROW_WORKLOADS:-cycle,contended}
parts=",${PARTS:-failover,rows},"
part() { [[ "$parts" == *",$1,"* ]]; }

log() { echo "bench-failover.sh: $*" >&2; }
die() { log "$*"; exit 1; }

preset=()
args=()
for arg in "$@"; do
  if [ "$arg" = --quick ]; then
    kills=${KILLS:-10}
    preset=(--repeats 1 --duration-secs 2 --warmup-ms 300 --clients 1,16)
  else
    args+=("$arg")
  fi
done
case "$profile" in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) die "BENCH_PROFILE must be release or debug, not $profile" ;;
esac

parent=${BENCH_TMP:-${TMPDIR:-/tmp}}
[ -d "$parent" ] || die "BENCH_TMP=$parent is not a directory"
fs_type=$(stat -f -c %T "$parent")
case "$fs_type" in
  tmpfs|ramfs) die "$parent is on $fs_type: fsync there costs nothing; set BENCH_TMP to a directory on disk" ;;
esac
fs_name=$(findmnt -n -o FSTYPE -T "$parent" 2>/dev/null || true)
fs_name=${fs_name:-$fs_type}
# fenced reads its flags from FENCED_* variables too: none may reach a member.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^FENCED_' || true)

fenced_version="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
bash scripts/install-etcd.sh >&2
log "building fenced and fenced-bench ($profile)"
cargo build "${build_flags[@]}" -p fenced -p fenced-bench >&2
bin=target/$profile
etcd_bin=$(command -v etcd)

tmp=$(mktemp -d "$parent/fenced-failover.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_LOGS:-}" ]; then
    for part in failover rows; do
      if [ -d "$tmp/$part" ]; then
        mkdir -p "$KEEP_LOGS/$part" && cp "$tmp/$part"/*.log "$KEEP_LOGS/$part/" 2>/dev/null || true
      fi
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
. scripts/lib-bench.sh

started=$(date -u '+%Y-%m-%d %H:%M UTC')
began=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 1. failover
failover_cmd=("$bin/fenced-failover" --fenced "$bin/fenced" --etcd "$etcd_bin"
  --dir "$tmp/failover" --kills "$kills" --heartbeat-ms "$heartbeat_ms"
  --election-timeout-ms "$election_ms" --etcd-heartbeat-ms "$etcd_heartbeat_ms")
if part failover; then
  mkdir -p "$tmp/failover"
  log "running: ${failover_cmd[*]}"
  "${failover_cmd[@]}" >"$tmp/failover.md"
fi

# ---- 2. lock cycles against each cluster's leader
commands=()
if part rows; then
  mkdir -p "$tmp/rows"
  raft=(); client=(); peer=(); etcd_client=()
  for i in 1 2 3; do
    pick_port p; raft+=("127.0.0.1:$p"); pick_port p; client+=("127.0.0.1:$p")
    pick_port p; peer+=("http://127.0.0.1:$p"); pick_port p; etcd_client+=("http://127.0.0.1:$p")
  done
  members=""; initial_cluster=""
  for i in 0 1 2; do
    members+="${members:+,}$((i + 1))=${raft[i]}/${client[i]}"
    initial_cluster+="${initial_cluster:+,}m$((i + 1))=${peer[i]}"
  done
  fenced_pids=(); etcd_pids=()
  for i in 0 1 2; do
    fenced_cmd=("$bin/fenced" --node-id "$((i + 1))" --raft-listen "${raft[i]}" --members "$members"
      --listen "${client[i]}" --data-dir "$tmp/rows/fenced-$((i + 1))"
      --heartbeat-ms "$heartbeat_ms" --election-timeout-ms "$election_ms")
    RUST_LOG=info,openraft=off "${fenced_cmd[@]}" >"$tmp/rows/fenced-$((i + 1)).log" 2>&1 &
    pids+=($!); fenced_pids+=($!)
    commands+=("RUST_LOG=info,openraft=off $(show_cmd "${fenced_cmd[@]}")")
    etcd_cmd=(etcd --name "m$((i + 1))" --data-dir "$tmp/rows/etcd-$((i + 1))"
      --listen-client-urls "${etcd_client[i]}" --advertise-client-urls "${etcd_client[i]}"
      --listen-peer-urls "${peer[i]}" --initial-advertise-peer-urls "${peer[i]}"
      --initial-cluster "$initial_cluster" --initial-cluster-state new
      --heartbeat-interval "$etcd_heartbeat_ms" --election-timeout "$election_ms"
      --logger zap --log-level warn)
    "${etcd_cmd[@]}" >"$tmp/rows/etcd-$((i + 1)).log" 2>&1 &
    pids+=($!); etcd_pids+=($!)
    commands+=("$(show_cmd "${etcd_cmd[@]}")")
  done
  # The fenced leader: the one member whose last promotion or demotion in its log is a
  # promotion. A new cluster may change leaders once while its members start (a member that
  # starts late hears nothing while the leader's replication to it backs off, and runs an
  # election), so the leader is read only after the cluster has been quiet for 3 s.
  fenced_leader() {
    local log
    for log in "$tmp"/rows/fenced-*.log; do
      if [ "$(grep -E 'promoted: serving as the leader|no longer the leader' "$log" | tail -n1 | grep -c promoted)" = 1 ]; then
        echo "$log"
      fi
    done
  }
  fenced_changes() { cat "$tmp"/rows/fenced-*.log | grep -cE 'promoted: serving as the leader|no longer the leader'; }
  wait_for 60 bash -c "grep -l 'promoted: serving as the leader' '$tmp'/rows/fenced-*.log" \
    || die "no fenced member was promoted within 60 s; see $tmp/rows"
  for _ in $(seq 20); do
    changes=$(fenced_changes); sleep 3
    if [ "$(fenced_changes)" = "$changes" ] && [ "$(fenced_leader | wc -l)" = 1 ]; then break; fi
  done
  [ "$(fenced_leader | wc -l)" = 1 ] || die "the fenced cluster did not settle on one leader; see $tmp/rows"
  leader_log=$(fenced_leader)
  leader_index=$(basename "$leader_log" .log); leader_index=${leader_index#fenced-}
  fenced_addr=${client[leader_index - 1]}
  fenced_pid=${fenced_pids[leader_index - 1]}
  # The etcd leader: the member whose status says it leads.
  etcd_endpoints=$(IFS=,; echo "${etcd_client[*]}")
  etcd_leader() { etcdctl --endpoints "$etcd_endpoints" endpoint status -w simple 2>/dev/null | awk -F', ' '$5 == "true" {print $1}'; }
  wait_for 60 bash -c "etcdctl --endpoints '$etcd_endpoints' endpoint status -w simple | grep -q ', true, '" \
    || die "etcd elected no leader within 60 s; see $tmp/rows"
  etcd_addr=$(etcd_leader)
  etcd_addr=${etcd_addr#http://}
  etcd_pid=""
  for i in 0 1 2; do
    if [ "${etcd_client[i]}" = "http://$etcd_addr" ]; then etcd_pid=${etcd_pids[i]}; fi
  done
  [ -n "$etcd_pid" ] || die "the etcd leader $etcd_addr is none of the members"
  for pid in "${fenced_pids[@]}"; do
    if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qx -- --no-fdatasync; then die "a fenced member runs with --no-fdatasync"; fi
    if tr '\0' '\n' <"/proc/$pid/environ" | grep -q '^FENCED_'; then die "a fenced member's environment has FENCED_* variables"; fi
  done
  for pid in "${etcd_pids[@]}"; do
    if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -q -- '^--unsafe-no-fsync'; then die "an etcd member runs with --unsafe-no-fsync"; fi
  done
  log "fenced leader: member $leader_index on $fenced_addr; etcd leader on $etcd_addr"
  bench_cmd=("$bin/fenced-bench" --sync-dir "$tmp" --fenced "http://$fenced_addr" --fenced-pid "$fenced_pid"
    --fenced-transports session,unary --etcd "http://$etcd_addr" --etcd-pid "$etcd_pid"
    --workloads "$row_workloads" "${preset[@]}" "${args[@]}")
  log "running: ${bench_cmd[*]}"
  "${bench_cmd[@]}" >"$tmp/rows.md"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
took=$(( (SECONDS - began + 30) / 60 ))
if ((took == 0)); then took="under a minute"; else took="about $took minutes"; fi

# ---- the section
script_cmd="bash scripts/bench-failover.sh"
for arg in "$@"; do script_cmd+=" $(show_cmd "$arg")"; done
for var in KILLS HEARTBEAT_MS ELECTION_TIMEOUT_MS ROW_WORKLOADS PARTS; do
  if [ -n "${!var:-}" ]; then script_cmd="$var=${!var} $script_cmd"; fi
done
if [ "$profile" != release ]; then script_cmd="BENCH_PROFILE=$profile $script_cmd"; fi
section="$tmp/section.md"
{
  echo "<!-- cluster-section:begin (written by scripts/bench-failover.sh; bench.sh keeps it) -->"
  echo "## Cluster: three fenced members against three etcd members"
  echo
  echo "Generated by \`$script_cmd\` (rerun it to refresh this section). The run took $took, from $started."
  echo
  echo "- Machine: as above ($(nproc) cores, shared with other work and noisy: every number is one run's, not the best of several); load average (1, 5, 15 min) before: $load_before; after: $load_after"
  echo "- fenced: $fenced_version, $profile build; etcd: $(etcd --version | head -n1 | sed 's/^etcd Version: //') (Debian package)"
  echo "- Each cluster: three members on loopback, each with its own data directory on $fs_name. fenced members run without \`--no-fdatasync\` and with no \`FENCED_*\` variable: every raft append is fdatasynced before it counts. etcd members run without \`--unsafe-no-fsync\`: every raft entry is fsynced to the WAL before it commits."
  echo "- Raft timing: fenced \`--heartbeat-ms $heartbeat_ms --election-timeout-ms $election_ms\`; etcd \`--heartbeat-interval $etcd_heartbeat_ms --election-timeout $election_ms\` (the same election timeout; each system draws every timeout between it and twice it; etcd refuses an election timeout below five heartbeats, so its heartbeat is at most a fifth of it)."
  if part failover; then
    echo
    echo "### Failover: SIGKILL of the leader"
    echo
    echo "\`fenced-failover\` kills the current leader with SIGKILL $kills times per system (the systems alternating), and after each kill restarts the killed member on its data directory and waits until every member follows one leader, and 1 s more, before the next. Times run from the signal. Before each kill the client takes a lease through the leader (fenced: \`Acquire\` of a lock, TTL 30 s; etcd: \`LeaseGrant\`, TTL 30 s, plus a session lease for the locks) and renews it once. After the kill, three probes run at once, each starting an attempt on every member's endpoint (the dead one included) every 10 ms without waiting for the earlier ones (a call that hangs, as etcd's do while their member has no leader, holds up nothing), each attempt bounded by 1 s: *a surviving member names a new leader* (fenced: a member answers a \`Describe\`, or refuses it as not-leader naming a live leader; etcd: \`Maintenance.Status\` names a live leader); *grant of a free lock* (fenced: a try-once \`Acquire\` of a lock never used, creating its lease; etcd: \`Lock\` of a lock never used under the session lease, as etcd's \`concurrency\` package takes a lock); *renewal of the lease held before the kill* (fenced: unary \`Renew\` answered \`RENEWED\`; etcd: \`LeaseKeepAlive\` answered with a TTL above 0). The client follows a leader change by trying every member, so what is measured is the servers' failover, plus up to 10 ms of polling and one loopback round trip."
    echo
    cat "$tmp/failover.md"
    echo
    echo '```sh'
    show_cmd "${failover_cmd[@]}"
    echo '```'
  fi
  if part rows; then
    echo
    echo "### Lock cycles on the clusters"
    echo
    echo "\`fenced-bench\` runs \`$row_workloads\` against each cluster's leader, as the single-node rows above run against one server (fenced over the gRPC \`Session\` stream and over unary calls; etcd's \`Lock\`/\`Unlock\` under a session lease). Every grant and release commits through raft on a quorum of the three members. The CPU and memory columns are the leader's only."
    echo
    cat "$tmp/rows.md"
    echo
    echo '```sh'
    for c in "${commands[@]}"; do echo "$c"; done
    show_cmd "${bench_cmd[@]}"
    echo '```'
  fi
  echo "<!-- cluster-section:end -->"
} >"$section"

# ---- into the report: the section replaces its previous version, or goes before the
# analysis (or at the end); the analysis is refreshed from bench/analysis.md.
analysis_head=""
if [ -f bench/analysis.md ]; then analysis_head=$(head -n1 bench/analysis.md); fi
touch "$out"
awk -v section="$section" -v analysis=bench/analysis.md -v analysis_head="$analysis_head" '
  function emit(file,   line) { while ((getline line < file) > 0) print line; close(file) }
  /^<!-- cluster-section:begin/ { skipping = 1; next }
  skipping && /^<!-- cluster-section:end/ { skipping = 0; next }
  skipping { next }
  analysis_head != "" && $0 == analysis_head {
    if (!placed) { emit(section); print ""; placed = 1 }
    emit(analysis); done = 1; exit
  }
  { print }
  END {
    if (!placed && !done) { print ""; emit(section) }
  }
' "$out" >"$tmp/report.md"
# Blank lines left where the section was taken out collapse to one.
cat -s "$tmp/report.md" >"$out"
log "wrote the cluster section into $out"
