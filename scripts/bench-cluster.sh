#!/usr/bin/env bash
# Starts a 3-node kvstore cluster from target/release for benchmarking, in the background.
#
#   scripts/bench-cluster.sh start DIR [BASE_PORT]   data under DIR/<id>, logs DIR/<id>.log,
#                                                    pids in DIR/pids; client ports BASE+1..3
#   scripts/bench-cluster.sh stop DIR                stop the nodes started there, and wait
#
# Every write is fsync'd on a majority as always; the only difference from
# deploy/local-cluster.sh is that the per-request access log is at WARN
# (RUST_LOG=info,kvstore::access=warn) unless KVSTORE_BENCH_LOG is set. KVNODE picks the binary
# (default target/release/kvnode), e.g. a saved copy of the previous build for an A/B run.
# Like local-cluster.sh, each node gets a third of the cores as worker threads (at least 1;
# WORKER_THREADS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?start|stop}
dir=${2:?data dir}
base=${3:-18080}
ids=(n1 n2 n3)
workers=${WORKER_THREADS:-$(( ($(nproc) + 2) / 3 ))}
case "$cmd" in
start)
  mkdir -p "$dir"
  : > "$dir/pids"
  for i in 0 1 2; do
    peers=""
    for j in 0 1 2; do
      [ "$j" = "$i" ] && continue
      peers+="${peers:+,}${ids[$j]}=http://127.0.0.1:$((base + j + 1 + 1000))"
    done
    RUST_LOG=${KVSTORE_BENCH_LOG:-info,kvstore::access=warn} "${KVNODE:-target/release/kvnode}" \
      --id "${ids[$i]}" --addr "127.0.0.1:$((base + i + 1))" \
      --raft-addr "127.0.0.1:$((base + i + 1 + 1000))" --peers "$peers" \
      --data "$dir/${ids[$i]}" --worker-threads "$workers" > "$dir/${ids[$i]}.log" 2>&1 &
    echo $! >> "$dir/pids"
  done
  seeds="http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2)),http://127.0.0.1:$((base + 3))"
  for _ in $(seq 100); do
    if target/release/kvctl --seeds "$seeds" --timeout 1 leader > /dev/null 2>&1; then
      echo "$seeds"
      exit 0
    fi
    sleep 0.1
  done
  echo "no leader after 10 s; see $dir/*.log" >&2
  exit 1
  ;;
stop)
  scripts/stop-pids.sh "$dir/pids"
  ;;
esac
