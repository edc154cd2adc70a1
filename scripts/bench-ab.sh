#!/usr/bin/env bash
# A/B of two kvnode builds, interleaved: both clusters run side by side and each round runs
# the same `kvctl bench` against A, then B (then B, then A in the next round, to cancel
# drift). Prints the median throughput and p50/p99 of each and the ratio B/A.
#
#   scripts/bench-ab.sh KVNODE_A KVNODE_B ROUNDS SECONDS -- <kvctl bench flags>
#   e.g. cp target/release/kvnode /tmp/kvnode-before; (edit, build)
#        scripts/bench-ab.sh /tmp/kvnode-before target/release/kvnode 5 5 -- --clients 64
#
# KVSTORE_BENCH_LOG is passed to both clusters (see scripts/bench-cluster.sh); LOG_A and LOG_B
# override it for one side, e.g. LOG_B=info to measure the access log with one binary.
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?kvnode A}
b=${2:?kvnode B}
rounds=${3:-5}
seconds=${4:-5}
shift 4
[ "${1:-}" = "--" ] && shift
out=$(mktemp -d /tmp/kvstore-ab.XXXXXX)
seeds_a=$(KVSTORE_BENCH_LOG=${LOG_A:-${KVSTORE_BENCH_LOG:-}} KVNODE=$a scripts/bench-cluster.sh start "$out/a" 18280)
seeds_b=$(KVSTORE_BENCH_LOG=${LOG_B:-${KVSTORE_BENCH_LOG:-}} KVNODE=$b scripts/bench-cluster.sh start "$out/b" 18380)
trap 'scripts/bench-cluster.sh stop "$out/a"; scripts/bench-cluster.sh stop "$out/b"' EXIT
run() { # label seeds
  target/release/kvctl --seeds "$2" --json bench --duration "$seconds" "${@:3}" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latencyMs"]; print(sys.argv[1], r["throughputPerSecond"], l["p50"], l["p99"], r["errorsTotal"])' "$1"
}
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    run A "$seeds_a" "$@"; run B "$seeds_b" "$@"
  else
    run B "$seeds_b" "$@"; run A "$seeds_a" "$@"
  fi
done | tee "$out/results.txt" >&2
python3 - "$out/results.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def med(label, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == label)
for name, column in [("throughput/s", 1), ("p50 ms", 2), ("p99 ms", 3)]:
    a, b = med("A", column), med("B", column)
    print(f"{name:<13} A {a:10.3f}   B {b:10.3f}   B/A {b / a:6.3f}")
print("errors:", sum(int(r[4]) for r in rows))
PY
