#!/usr/bin/env bash
# A/B of kvnode builds: ROUNDS times, for each binary in turn, starts a fresh 3-node cluster
# from it (scripts/bench-cluster.sh), warms up for 2 s, then runs one client's puts with
# `kvctl bench` and wrk -t1 -c64 with puts and then with linearizable reads against the
# leader, each for SECONDS; prints one line per run (one client's put p50 in ms).
# Alternating the builds lets each see the same machine moments; compare medians.
#
#   cp target/release/kvnode /tmp/kvnode.old   # before the change; rebuild after it
#   scripts/bench-ab.sh 3 6 /tmp/kvnode.old target/release/kvnode
#
# Needs wrk and a release build of kvctl. Data and logs under /tmp/kvstore-bench-ab/<n>.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}
seconds=${2:?seconds}
shift 2
[ $# -ge 1 ] || { echo "usage: $0 ROUNDS SECONDS KVNODE [KVNODE ...]" >&2; exit 2; }
for round in $(seq "$rounds"); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    dir=/tmp/kvstore-bench-ab/$n
    rm -rf "$dir"
    seeds=$(KVNODE=$bin scripts/bench-cluster.sh start "$dir" 18480)
    trap 'scripts/bench-cluster.sh stop "$dir"' EXIT
    leader=$(target/release/kvctl --seeds "$seeds" --json leader |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
    wrk -t1 -c64 -d2s -s scripts/wrk/kv-put.lua "$leader" > /dev/null
    rps() { wrk -t1 -c64 -d"${seconds}s" -s "scripts/wrk/kv-$1.lua" "$leader" |
      grep -oP 'Requests/sec:\s+\K[0-9.]+'; }
    p50=$(target/release/kvctl --seeds "$leader" --json bench --target direct --clients 1 \
      --duration "$seconds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latencyMs"]["p50"])')
    put=$(rps put)
    read=$(rps get)
    echo "round $round  $bin  put-1 p50 ${p50} ms  put $put/s  read $read/s"
    scripts/bench-cluster.sh stop "$dir"
    trap - EXIT
  done
done
