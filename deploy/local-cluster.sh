#!/usr/bin/env bash
# Starts a local 3-node kvstore cluster on loopback and keeps it in the foreground.
#
#   ./deploy/local-cluster.sh            build (release) and start n1, n2, n3
#   Ctrl-C                               stop all three (SIGTERM, graceful)
#
# Client ports 8081-8083, raft ports 9081-9083, data under ./data/<id>, logs in
# ./data/<id>.log. Restarting the script reuses the data: nothing acknowledged is lost.
# Override with KVSTORE_DATA_ROOT, KVSTORE_BASE_PORT (client port of n1 minus 1).
set -euo pipefail
cd "$(dirname "$0")/.."

data_root=${KVSTORE_DATA_ROOT:-./data}
base_port=${KVSTORE_BASE_PORT:-8080}
ids=(n1 n2 n3)

echo "building release binaries..."
cargo build --release --quiet --bin kvnode --bin kvctl --bin kvinspect
bin=target/release
mkdir -p "$data_root"

for i in 0 1 2; do
  port=$((base_port + i + 1))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port is already in use (another cluster running?)" >&2
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
  echo "stopped. data is kept in $data_root"
}
trap stop INT TERM EXIT

seeds=""
for i in 0 1 2; do
  id=${ids[$i]}
  port=$((base_port + i + 1))
  peers=""
  for j in 0 1 2; do
    [ "$j" = "$i" ] && continue
    peers+="${peers:+,}${ids[$j]}=http://127.0.0.1:$((base_port + j + 1001))"
  done
  seeds+="${seeds:+,}http://127.0.0.1:$port"
  "$bin/kvnode" --id "$id" --addr "127.0.0.1:$port" --raft-addr "127.0.0.1:$((port + 1000))" \
    --peers "$peers" --data "$data_root/$id" >>"$data_root/$id.log" 2>&1 &
  pids+=($!)
done

echo "waiting for a leader..."
if ! leader=$("$bin/kvctl" --seeds "$seeds" --timeout 20 leader); then
  echo "error: no leader within 20 s; see $data_root/n*.log" >&2
  exit 1
fi

cat <<TXT

kvstore is running: 3 nodes, leader $leader

  client API   http://127.0.0.1:$((base_port + 1))  http://127.0.0.1:$((base_port + 2))  http://127.0.0.1:$((base_port + 3))
  data, logs   $data_root/n1 .. n3, $data_root/n1.log .. n3.log

Try, in another terminal:
  export KVCTL_SEEDS=$seeds
  $bin/kvctl put greeting hello
  $bin/kvctl get greeting
  $bin/kvctl status
  curl -s -X PUT --data-binary world http://127.0.0.1:$((base_port + 1))/kv/hello

Press Ctrl-C to stop the cluster.
TXT

wait -n "${pids[@]}" || true
echo "a node exited; see $data_root/n*.log" >&2
