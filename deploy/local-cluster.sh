#!/usr/bin/env bash
# A local 3-node kvstore cluster on loopback.
#
#   ./deploy/local-cluster.sh            build (release), start n1 n2 n3, stay in the foreground
#   ./deploy/local-cluster.sh node n2    (re)start one node in the foreground, e.g. after kill -9
#   Ctrl-C                               stop what the script started (SIGTERM, graceful)
#
# Client ports 8081-8083, raft ports 9081-9083, data under ./data/<id>, logs in
# ./data/<id>.log. Starting again reuses the data: nothing acknowledged is lost.
# Override with KVSTORE_DATA_ROOT and KVSTORE_BASE_PORT (n1's client port minus 1).
# The three nodes share this machine's cores: each gets a third of them as worker threads
# (at least 1; WORKER_THREADS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

data_root=${KVSTORE_DATA_ROOT:-./data}
base_port=${KVSTORE_BASE_PORT:-8080}
ids=(n1 n2 n3)
bin=target/release
workers=${WORKER_THREADS:-$(( ($(nproc) + 2) / 3 ))}

client_port() { echo $((base_port + $1 + 1)); }

# node_args INDEX: the kvnode command line of node INDEX (0-based).
node_args() {
  local i=$1 peers="" j
  for j in 0 1 2; do
    [ "$j" = "$i" ] && continue
    peers+="${peers:+,}${ids[$j]}=http://127.0.0.1:$(($(client_port "$j") + 1000))"
  done
  echo --id "${ids[$i]}" --addr "127.0.0.1:$(client_port "$i")" \
    --raft-addr "127.0.0.1:$(($(client_port "$i") + 1000))" --peers "$peers" --data "$data_root/${ids[$i]}" \
    --worker-threads "$workers"
}

build() {
  echo "building release binaries..."
  cargo build --release --quiet --bins
  mkdir -p "$data_root"
}

if [ "${1:-}" = "node" ]; then
  for i in 0 1 2; do
    if [ "${ids[$i]}" = "${2:-}" ]; then
      build
      # shellcheck disable=SC2046
      exec "$bin/kvnode" $(node_args "$i")
    fi
  done
  echo "usage: $0 node n1|n2|n3" >&2
  exit 2
fi

build
for i in 0 1 2; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$(client_port "$i")") 2>/dev/null; then
    echo "error: port $(client_port "$i") is already in use (is a cluster already running?)" >&2
    exit 1
  fi
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; the data stays in $data_root"
}
trap stop INT TERM EXIT

seeds=""
for i in 0 1 2; do
  seeds+="${seeds:+,}http://127.0.0.1:$(client_port "$i")"
  # shellcheck disable=SC2046
  "$bin/kvnode" $(node_args "$i") >>"$data_root/${ids[$i]}.log" 2>&1 &
  pids+=($!)
done

echo "waiting for a leader..."
if ! leader=$("$bin/kvctl" --seeds "$seeds" --timeout 20 leader); then
  echo "error: no leader within 20 s; see $data_root/n*.log" >&2
  exit 1
fi

cat <<TXT

kvstore is running: 3 nodes, leader $leader

  node  client API             pid      data and log
  n1    http://127.0.0.1:$(client_port 0)  ${pids[0]}  $data_root/n1, $data_root/n1.log
  n2    http://127.0.0.1:$(client_port 1)  ${pids[1]}  $data_root/n2, $data_root/n2.log
  n3    http://127.0.0.1:$(client_port 2)  ${pids[2]}  $data_root/n3, $data_root/n3.log

In another terminal:
  export KVCTL_SEEDS=$seeds
  $bin/kvctl put greeting hello
  $bin/kvctl get greeting
  $bin/kvctl status
A node killed with kill -9 comes back with: $0 node <id>

Press Ctrl-C to stop the cluster.
TXT

# Stay up while any node runs (a killed node is not an emergency: that is the point).
while :; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && { sleep 1; continue 2; }
  done
  echo "every node has exited; see $data_root/n*.log" >&2
  exit 1
done
