#!/usr/bin/env bash
# Starts a 3-member etcd (3.4, Debian's etcd-server) cluster on loopback for comparison.
#
#   scripts/bench-etcd.sh start DIR [BASE_PORT]   data under DIR/<name>, logs DIR/<name>.log,
#                                                 pids in DIR/pids; client ports BASE+1..3,
#                                                 peer ports BASE+11..13
#   scripts/bench-etcd.sh stop DIR
#
# Default durability (every write fsync'd by each member's WAL before it counts): no
# --unsafe-no-fsync. Prints the client URLs, comma-separated, once a leader is elected.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data dir}
base=${3:-12370}
names=(e1 e2 e3)
case "$cmd" in
start)
  mkdir -p "$dir"
  : > "$dir/pids"
  cluster=""
  for i in 0 1 2; do
    cluster+="${cluster:+,}${names[$i]}=http://127.0.0.1:$((base + 11 + i))"
  done
  for i in 0 1 2; do
    etcd --name "${names[$i]}" --data-dir "$dir/${names[$i]}" \
      --listen-client-urls "http://127.0.0.1:$((base + 1 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((base + 1 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 11 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 11 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token kvstore-bench --log-level warn \
      > "$dir/${names[$i]}.log" 2>&1 &
    echo $! >> "$dir/pids"
  done
  urls="http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2)),http://127.0.0.1:$((base + 3))"
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --dial-timeout 1s --command-timeout 1s --endpoints "$urls" endpoint status 2>/dev/null | grep -q true; then
      echo "$urls"
      exit 0
    fi
    sleep 0.1
  done
  echo "no etcd leader after 10 s; see $dir/*.log" >&2
  exit 1
  ;;
stop)
  "$(dirname "$0")/stop-pids.sh" "$dir/pids"
  ;;
esac
