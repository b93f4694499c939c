# Sourced by bench.sh and bench-failover.sh: showing commands, picking loopback ports,
# waiting for servers. show_cmd shows the path in $tmp (when set) as TMP.

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
  if [ -n "${tmp:-}" ]; then out=${out//$tmp/TMP}; fi
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
