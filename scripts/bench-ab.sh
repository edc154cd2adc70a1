#!/usr/bin/env bash
# A/B of kvnode builds: ROUNDS times, for each binary in turn, starts a fresh 3-node cluster
# from it (scripts/bench-cluster.sh), warms up for 2 s, then runs one client's puts with
# `kvctl bench` and wrk -t1 -c64 with puts and then with linearizable reads against the
# leader, each for SECONDS; prints one line per run (one client's put p50 in ms), and the
# CPU each node spent per put during wrk's puts (user + system time from /proc/PID/stat,
# divided by wrk's request count; the leader first). CPU per put is the steadier number:
# throughput moves by 10-20% from round to round on a shared VM.
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
base=18480   # scripts/bench-cluster.sh: client ports base+1..base+3, in the pid file's order
[ $# -ge 1 ] || { echo "usage: $0 ROUNDS SECONDS KVNODE [KVNODE ...]" >&2; exit 2; }
for round in $(seq "$rounds"); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    dir=/tmp/kvstore-bench-ab/$n
    rm -rf "$dir"
    seeds=$(KVNODE=$bin scripts/bench-cluster.sh start "$dir" "$base")
    trap 'scripts/bench-cluster.sh stop "$dir"' EXIT
    leader=$(target/release/kvctl --seeds "$seeds" --json leader |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
    wrk -t1 -c64 -d2s -s scripts/wrk/kv-put.lua "$leader" > /dev/null
    wrk_run() { wrk -t1 -c64 -d"${seconds}s" -s "scripts/wrk/kv-$1.lua" "$leader"; }
    rps() { grep -oP 'Requests/sec:\s+\K[0-9.]+'; }
    p50=$(target/release/kvctl --seeds "$leader" --json bench --target direct --clients 1 \
      --duration "$seconds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latencyMs"]["p50"])')
    # The nodes' pids, the leader's first.
    mapfile -t pids < "$dir/pids"
    first=$(( ${leader##*:} - base - 1 ))
    ordered=("${pids[$first]}")
    for i in 0 1 2; do [ "$i" = "$first" ] || ordered+=("${pids[$i]}"); done
    ticks() { for pid in "${ordered[@]}"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done; }
    before=$(ticks)
    out=$(wrk_run put)
    after=$(ticks)
    put=$(rps <<< "$out")
    requests=$(grep -oP '\d+(?= requests in)' <<< "$out")
    cpu=$(python3 - "$before" "$after" "$requests" "$(getconf CLK_TCK)" <<'PY'
import sys
before, after = (list(map(int, arg.split())) for arg in sys.argv[1:3])
requests, hz = int(sys.argv[3]), int(sys.argv[4])
print(" ".join(f"{(a - b) / hz * 1e6 / requests:.2f}" for b, a in zip(before, after)))
PY
)
    read=$(wrk_run get | rps)
    echo "round $round  $bin  put-1 p50 ${p50} ms  put $put/s (CPU µs/put: $cpu)  read $read/s"
    scripts/bench-cluster.sh stop "$dir"
    trap - EXIT
  done
done
