#!/usr/bin/env bash
# kvstore vs etcd 3.4 vs a do-nothing axum server, measured in one run, interleaved.
# etcd runs twice: with Go's default GOMAXPROCS (every core) and with GOMAXPROCS=1, the
# counterpart of the one worker thread per node kvstore's scripts give three nodes on two
# cores; ratios are taken against the better etcd of each scenario.
#
#   scripts/bench-compare.sh [ROUNDS=3] [SECONDS=5] [OUT_DIR=/tmp/kvstore-bench-compare]
#
# Starts the three servers side by side (a 3-node kvstore cluster from target/release,
# a 3-member etcd cluster with its default fsync, examples/ceiling), then ROUNDS times runs
# each scenario against each target back to back, so every target sees the same machine
# moments: one client puts; 64 client puts; 64 client linearizable reads. Each scenario
# runs with `kvctl bench` and, for the 64-client ones, with `wrk -t1` too: two independent
# load generators, each costing about the same CPU per request, which the servers share.
# Prints a table of medians over the rounds and the ratios; raw results in
# OUT_DIR/results.jsonl.
# 16 B keys, 100 B values, 1000 keys. Build first: cargo build --release --bins --example ceiling
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
out=${3:-/tmp/kvstore-bench-compare}
rm -rf "$out"
mkdir -p "$out"
results="$out/results.jsonl"
kvctl=target/release/kvctl

ceiling_pid=""
cleanup() {
  [ -n "$ceiling_pid" ] && kill "$ceiling_pid" 2>/dev/null
  scripts/bench-cluster.sh stop "$out/kvstore"
  scripts/bench-etcd.sh stop "$out/etcd"
  scripts/bench-etcd.sh stop "$out/etcd1"
}
# Before anything starts: a server that fails to start must not leave the others running.
trap cleanup EXIT
kv=$(scripts/bench-cluster.sh start "$out/kvstore" 18180)
etcd=$(scripts/bench-etcd.sh start "$out/etcd" 12470)
etcd1=$(GOMAXPROCS=1 scripts/bench-etcd.sh start "$out/etcd1" 12570)
target/release/examples/ceiling 127.0.0.1:18190 2> "$out/ceiling.log" &
ceiling_pid=$!
sleep 1
kv_leader=$($kvctl --seeds "$kv" --json leader | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
etcd_leader_of() {
  for url in ${1//,/ }; do
    if ETCDCTL_API=3 etcdctl --endpoints "$url" endpoint status | grep -q ", true,"; then echo "$url"; fi
  done
}
etcd_leader=$(etcd_leader_of "$etcd")
etcd1_leader=$(etcd_leader_of "$etcd1")
echo "kvstore leader $kv_leader; etcd leaders $etcd_leader, $etcd1_leader (GOMAXPROCS=1); ceiling http://127.0.0.1:18190" >&2

# seeds, target flag per target name
seeds_of() { case $1 in kvstore) echo "$kv" ;; etcd) echo "$etcd" ;; etcd1) echo "$etcd1" ;; ceiling) echo http://127.0.0.1:18190 ;; esac; }
mode_of() { case $1 in kvstore) echo kvstore ;; etcd*) echo etcd ;; ceiling) echo direct ;; esac; }
url_of() { case $1 in kvstore) echo "$kv_leader" ;; etcd) echo "$etcd_leader" ;; etcd1) echo "$etcd1_leader" ;; ceiling) echo http://127.0.0.1:18190 ;; esac; }
lua_of() { # target op
  case $1 in etcd*) echo "scripts/wrk/etcd-$2.lua" ;; *) echo "scripts/wrk/kv-$2.lua" ;; esac
}

run_kvctl() { # round scenario target clients read_ratio
  local json
  json=$($kvctl --seeds "$(seeds_of "$3")" --json bench --target "$(mode_of "$3")" \
    --clients "$4" --duration "$seconds" --keys 1000 --read-ratio "$5")
  python3 -c 'import json,sys
r=json.loads(sys.argv[4]); l=r["latencyMs"]
print(json.dumps({"round":int(sys.argv[1]),"scenario":sys.argv[2],"target":sys.argv[3],"tool":"kvctl",
  "throughput":r["throughputPerSecond"],"p50":l["p50"],"p99":l["p99"],"errors":r["errorsTotal"]}))' \
    "$1" "$2" "$3" "$json" >> "$results"
}

run_wrk() { # round scenario target op
  local text
  text=$(wrk -t1 -c64 -d"${seconds}s" --latency -s "$(lua_of "$3" "$4")" "$(url_of "$3")")
  python3 -c 'import json,re,sys
t=sys.argv[4]
def ms(pattern):
    # Only the "Latency Distribution" lines start with a percentile: the stdev column
    # above them ends in one too ("92.99%").
    m=re.search(pattern,t,re.M)
    n=m and re.match(r"([\d.]+)(us|ms|s)$",m.group(1))
    if not n:
        sys.stderr.write("unparsable wrk output for %s:\n%s\n" % (pattern, t))
        return None
    return float(n.group(1))*{"us":0.001,"ms":1,"s":1000}[n.group(2)]
m=re.search(r"Requests/sec:\s+([\d.]+)",t)
rps=float(m.group(1)) if m else 0.0
p50=ms(r"^\s*50%\s+(\S+)"); p99=ms(r"^\s*99%\s+(\S+)")
bad=re.search(r"Non-2xx or 3xx responses: (\d+)",t); err=re.search(r"Socket errors: (.*)",t)
print(json.dumps({"round":int(sys.argv[1]),"scenario":sys.argv[2],"target":sys.argv[3],"tool":"wrk",
  "throughput":rps,"p50":p50,"p99":p99,"errors":int(bad.group(1)) if bad else 0,"socket":err.group(1) if err else ""}))' \
    "$1" "$2" "$3" "$text" >> "$results"
}

for round in $(seq "$rounds"); do
  for target in kvstore etcd etcd1 ceiling; do
    echo "round $round: $target" >&2
    run_kvctl "$round" put-1 "$target" 1 0
    run_kvctl "$round" put-64 "$target" 64 0
    run_wrk "$round" put-64 "$target" put
    run_kvctl "$round" read-64 "$target" 64 1
    run_wrk "$round" read-64 "$target" get
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(scenario, target, tool, field):
    values = [r[field] for r in rows if (r["scenario"], r["target"], r["tool"]) == (scenario, target, tool) and r[field] is not None]
    return statistics.median(values) if values else float("nan")
print(f"{'scenario':<10} {'tool':<6} {'metric':<11} {'kvstore':>9} {'etcd':>9} {'etcd-1p':>9} {'ceiling':>9} {'kv/etcd':>8} {'kv/ceil':>8}")
for scenario, tools, metrics in [("put-1", ["kvctl"], ["p50", "throughput"]),
                                 ("put-64", ["kvctl", "wrk"], ["throughput", "p99"]),
                                 ("read-64", ["kvctl", "wrk"], ["throughput", "p99"])]:
    for tool in tools:
        for metric in metrics:
            kv, et, et1, ce = (med(scenario, t, tool, metric) for t in ("kvstore", "etcd", "etcd1", "ceiling"))
            # The better etcd: more throughput, less latency.
            best = max(et, et1) if metric == "throughput" else min(et, et1)
            print(f"{scenario:<10} {tool:<6} {metric:<11} {kv:>9.2f} {et:>9.2f} {et1:>9.2f} {ce:>9.2f} {kv/best:>8.2f} {kv/ce:>8.3f}")
errors = sum(r["errors"] for r in rows)
print(f"errors in all runs: {errors}; rounds: {max(r['round'] for r in rows)}")
PY
