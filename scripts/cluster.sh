#!/usr/bin/env bash
# Runs a three-member fenced cluster on this machine, for trying it: members 1, 2 and 3 on
# loopback, clients on ports 7501-7503, raft on 7601-7603, data in ./fenced-cluster/nN
# (kept across runs: a second run starts the same cluster again). The members share a
# cluster secret (./fenced-cluster/secret, made on the first run, mode 0600), so only they
# can send each other raft messages. Builds fenced (release) first. Stops all three on
# Ctrl-C; logs are in ./fenced-cluster/nN.log.
#
# Usage: scripts/cluster.sh [extra fenced flags for every member...]
#   e.g. scripts/cluster.sh --election-timeout-ms 500 --heartbeat-ms 100
#
# Try it from another terminal (the SDK and fencectl follow the leader):
#   fencectl --endpoints http://127.0.0.1:7501,http://127.0.0.1:7502,http://127.0.0.1:7503 \
#     lock demo/job -- sleep 30
# then kill the leader (its log says "promoted: serving as the leader"):
#   kill -9 "$(cat fenced-cluster/n1.pid)"
# and start it again with its own line from this script's output.
#
# Environment:
#   CLUSTER_DIR   where the members keep their data and logs (default ./fenced-cluster)
#   FENCED_BIN    a fenced binary to run instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${CLUSTER_DIR:-$root/fenced-cluster}

if [ -n "${FENCED_BIN:-}" ]; then
  bin=$FENCED_BIN
else
  cargo build --release -p fenced >&2
  bin=$root/target/release/fenced
fi

members="1=127.0.0.1:7601/127.0.0.1:7501,2=127.0.0.1:7602/127.0.0.1:7502,3=127.0.0.1:7603/127.0.0.1:7503"
mkdir -p "$dir"
if [ ! -s "$dir/secret" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"$dir/secret")
fi
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

for id in 1 2 3; do
  cmd=("$bin" --node-id "$id" --raft-listen "127.0.0.1:760$id" --listen "127.0.0.1:750$id"
    --members "$members" --data-dir "$dir/n$id" --cluster-secret-file "$dir/secret" "$@")
  echo "member $id: ${cmd[*]}"
  "${cmd[@]}" >"$dir/n$id.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$dir/n$id.pid"
done

# Ready when some member answers as the leader (the others answer "not the leader").
for _ in $(seq 1 300); do
  for id in 1 2 3; do
    if grep -q "promoted: serving as the leader" "$dir/n$id.log" 2>/dev/null; then
      echo "cluster ready: endpoints http://127.0.0.1:7501,http://127.0.0.1:7502,http://127.0.0.1:7503 (member $id leads)"
      wait
      exit 0
    fi
  done
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a member exited; its log:" >&2
      tail -n 20 "$dir"/n*.log >&2
      exit 1
    fi
  done
  sleep 0.1
done
echo "no leader within 30 s; logs in $dir" >&2
exit 1
