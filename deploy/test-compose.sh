#!/usr/bin/env bash
# End-to-end test of the compose deployment on this machine's Docker Engine.
#
#   deploy/test-compose.sh                        build the image, run the scenario, clean up
#   KVSTORE_SKIP_CARGO=1 deploy/test-compose.sh   reuse target/release as it is (target/debug
#                                                 with KVSTORE_CARGO_PROFILE=dev, as .ci/run does)
#
# Scenario: a fresh 3-node cluster (unique project name, new volumes, host ports chosen by
# Docker so that nothing collides with a cluster already on 8081-8083), wait for a leader and
# for every container to be healthy; write keys with kvctl inside a container; SIGKILL the
# leader's container (compose kill); a new leader must be elected and every acknowledged key
# readable; write more; start the killed container again and wait until all three nodes have
# applied the same index with the same state hash; SIGKILL one node's process behind Docker's
# back and check that the restart policy brings it back; stop all three (SIGTERM: each must
# exit 0 within a few seconds), start them again, and check that nothing acknowledged was lost.
# Everything is removed on exit (containers, network, volumes, the test image tag), also on
# failure or Ctrl-C. Every wait has a deadline. The last line is "PASS ..." or "FAIL: why".
set -uo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
project="kvtest$$x$RANDOM"
image="kvstore:$project"
work=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-compose-test.XXXXXX")
verdict=""
keys_before=${KVTEST_KEYS:-12}   # per write phase
election_deadline=30
op_timeout=60                    # bound on any single docker command

say() { echo "test-compose: $*"; }

finish() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "${compose_ready:-}" ]; then
    timeout 120 "${compose[@]}" down -v --remove-orphans -t 10 >>"$work/teardown.log" 2>&1 ||
      echo "test-compose: warning: teardown failed, see $work/teardown.log" >&2
  fi
  docker image rm "$image" >/dev/null 2>&1 || true
  if [ -z "$verdict" ]; then
    verdict="FAIL: interrupted or unexpected exit (status $status)"
  fi
  case "$verdict" in
    PASS*) rm -rf "$work"; echo "test-compose: $verdict"; exit 0 ;;
    *) echo "test-compose: $verdict" >&2; exit 1 ;;
  esac
}
trap finish EXIT
trap 'verdict="FAIL: interrupted"; exit 1' INT TERM

# fail REASON: print diagnostics, then exit through finish with REASON as the last line.
fail() {
  if [ -n "${compose_ready:-}" ]; then
    {
      echo "---- docker compose ps"
      timeout 30 "${compose[@]}" ps 2>&1
      for service in kv1 kv2 kv3; do
        echo "---- last log lines of $service"
        timeout 30 "${compose[@]}" logs --no-color --tail 15 "$service" 2>&1
      done
      echo "---- (scratch files kept in $work)"
    } >&2
  fi
  verdict="FAIL: $*"
  exit 1
}

# ---- prerequisites
command -v docker >/dev/null || fail "docker is not installed"
timeout 20 docker info >/dev/null 2>&1 || fail "no Docker daemon reachable (docker info failed)"
if timeout 20 docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
compose=(timeout "$op_timeout" "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.yml)
# The compose file reads these: a private image tag, host ports picked by Docker, loopback.
export KVSTORE_IMAGE=$image KV1_PORT=0 KV2_PORT=0 KV3_PORT=0 KVSTORE_PUBLISH_ADDR=127.0.0.1
export KVSTORE_LOG=info
say "project $project, compose: ${compose_cmd[*]}"

# ---- image
KVSTORE_IMAGE=$image deploy/build-image.sh >"$work/build.log" 2>&1 ||
  { tail -20 "$work/build.log" >&2; fail "deploy/build-image.sh failed (see above)"; }
say "$(grep 'built ' "$work/build.log" | sed 's/^build-image: //') in $((SECONDS - started)) s"

# ---- helpers
services=(kv1 kv2 kv3)
all_seeds=http://kv1:8080,http://kv2:8080,http://kv3:8080
declare -A acked=()        # key -> value, for every write kvctl acknowledged
last_revision=0

declare -A ids=()          # service -> container id (kept across stop, kill and start)
cid() { echo "${ids[$1]:-}"; }

# kvctl SERVICE ARGS...: run kvctl inside SERVICE's container.
kvctl_in() {
  local service=$1
  shift
  local id
  id=$(cid "$service")
  [ -n "$id" ] || return 1
  timeout "$op_timeout" docker exec "$id" kvctl "$@"
}

seeds_of() {
  local seeds="" service
  for service in "$@"; do seeds+="${seeds:+,}http://$service:8080"; done
  echo "$seeds"
}

# wait_leader VIA SERVICES...: waits until a leader among SERVICES is known; prints its
# service name (n2 -> kv2).
wait_leader() {
  local via=$1 deadline=$((SECONDS + election_deadline)) out
  shift
  while [ $SECONDS -lt $deadline ]; do
    if out=$(kvctl_in "$via" --seeds "$(seeds_of "$@")" --timeout 3 leader 2>/dev/null); then
      local id=${out%% *}
      local service="kv${id#n}"
      if printf '%s\n' "$@" | grep -qx "$service"; then
        echo "$service"
        return 0
      fi
    fi
    sleep 0.5
  done
  return 1
}

# put VIA PHASE COUNT: writes COUNT keys through VIA's container; records acknowledged ones.
put_keys() {
  local via=$1 phase=$2 count=$3 i key value out
  for i in $(seq 1 "$count"); do
    key="$phase-$i"
    value="v-$phase-$i-$RANDOM"
    if out=$(kvctl_in "$via" --seeds "$all_seeds" --timeout 15 put "$key" "$value" 2>&1); then
      acked[$key]=$value
      local revision=${out##* }
      [ "$revision" -gt "$last_revision" ] 2>/dev/null && last_revision=$revision
    else
      fail "put $key via $via was not acknowledged: $out"
    fi
  done
}

# check_keys VIA SEEDS: every acknowledged key reads back its value (linearizable reads).
check_keys() {
  local via=$1 seeds=$2 key got
  for key in "${!acked[@]}"; do
    got=$(kvctl_in "$via" --seeds "$seeds" --timeout 15 get "$key" 2>&1) ||
      fail "acknowledged key $key is not readable via $via: $got"
    [ "$got" = "${acked[$key]}" ] ||
      fail "acknowledged key $key reads back '$got', expected '${acked[$key]}'"
  done
}

# wait_converged VIA: waits until all three nodes answer /raft/status with the same
# lastApplied (at least the last acknowledged revision) and the same stateHash.
wait_converged() {
  local via=$1 deadline=$((SECONDS + election_deadline)) json applied hashes
  while [ $SECONDS -lt $deadline ]; do
    json=$(kvctl_in "$via" --seeds "$all_seeds" --timeout 3 --json status 2>/dev/null) || json=""
    applied=$(grep -o '"lastApplied":[0-9]*' <<<"$json" | cut -d: -f2 | sort -u)
    hashes=$(grep -o '"stateHash":"[0-9a-f]*"' <<<"$json" | sort | uniq -c)
    if [ "$(grep -o '"lastApplied"' <<<"$json" | wc -l)" = 3 ] &&
      [ "$(wc -l <<<"$applied")" = 1 ] && [ "$applied" -ge "$last_revision" ] &&
      [ "$(awk '{print $1}' <<<"$hashes")" = 3 ]; then
      echo "applied $applied, state hash $(cut -d'"' -f4 <<<"$hashes")"
      return 0
    fi
    sleep 0.5
  done
  echo "$json" >"$work/status.json"
  return 1
}

wait_healthy() {
  local deadline=$((SECONDS + 60)) service states
  while [ $SECONDS -lt $deadline ]; do
    states=""
    for service in "$@"; do
      states+="$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$service")" 2>/dev/null) "
    done
    [ "$states" = "$(printf 'healthy %.0s' "$@")" ] && return 0
    sleep 1
  done
  fail "containers $* not all healthy within 60 s (health: $states)"
}

# ---- 1. a fresh cluster
compose_ready=1
up_at=$SECONDS
"${compose[@]}" up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up failed"; }
for service in "${services[@]}"; do
  ids[$service]=$("${compose[@]}" ps -q "$service" 2>/dev/null)
  [ -n "${ids[$service]}" ] || fail "compose up created no container for $service"
done
leader=$(wait_leader kv1 "${services[@]}") || fail "no leader elected within ${election_deadline} s"
say "cluster up, leader $leader ($((SECONDS - up_at)) s after compose up)"
wait_healthy "${services[@]}"
for service in "${services[@]}"; do
  hostport=$("${compose[@]}" port "$service" 8080 2>/dev/null | tail -1)
  [ -n "$hostport" ] || fail "$service: client port 8080 is not published"
  if command -v curl >/dev/null; then
    curl -fsS --max-time 5 "http://$hostport/health" >/dev/null ||
      fail "$service: GET /health on the published port $hostport failed"
  fi
done
say "all three healthy, client ports published on the host"

# ---- 2. writes, through a follower (kvctl follows the not_leader hint)
follower=kv1
[ "$leader" = kv1 ] && follower=kv2
put_keys "$follower" a "$keys_before"
say "wrote ${#acked[@]} keys via $follower (last revision $last_revision)"
# The README's form: compose exec (-T: no TTY here).
out=$("${compose[@]}" exec -T kv1 kvctl --seeds "$all_seeds" put via-compose-exec yes 2>&1) ||
  fail "compose exec kv1 kvctl ... put failed: $out"
acked[via-compose-exec]=yes

# ---- 3. SIGKILL the leader's container
"${compose[@]}" kill "$leader" >>"$work/ops.log" 2>&1 || fail "compose kill $leader failed"
state=$(docker inspect -f '{{.State.Running}}' "$(cid "$leader")" 2>/dev/null)
[ "$state" = false ] || fail "$leader still running after compose kill"
survivors=()
for service in "${services[@]}"; do [ "$service" != "$leader" ] && survivors+=("$service"); done
killed_at=$SECONDS
new_leader=$(wait_leader "${survivors[0]}" "${survivors[@]}") ||
  fail "no new leader among ${survivors[*]} within ${election_deadline} s of killing $leader"
say "killed $leader; new leader $new_leader within $((SECONDS - killed_at)) s"
check_keys "${survivors[0]}" "$(seeds_of "${survivors[@]}")"
put_keys "${survivors[1]}" b "$keys_before"
check_keys "${survivors[1]}" "$(seeds_of "${survivors[@]}")"
say "all ${#acked[@]} acknowledged keys readable with $leader down"

# ---- 4. the killed node comes back and catches up
"${compose[@]}" start "$leader" >>"$work/ops.log" 2>&1 || fail "compose start $leader failed"
converged=$(wait_converged "$new_leader") ||
  fail "$leader did not catch up within ${election_deadline} s (status in $work/status.json)"
say "$leader restarted and caught up: $converged"
check_keys "$leader" "$(seeds_of "$leader")"

# ---- 4b. a node that crashes (its process killed outside Docker) is restarted by the
# restart policy; needs permission to signal the container's process from here.
crashed=kv1
[ "$new_leader" = kv1 ] && crashed=kv2
pid=$(docker inspect -f '{{.State.Pid}}' "$(cid "$crashed")")
restarts=$(docker inspect -f '{{.RestartCount}}' "$(cid "$crashed")")
if [ "${pid:-0}" -gt 0 ] && kill -KILL "$pid" 2>/dev/null; then
  deadline=$((SECONDS + 30))
  until [ "$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$(cid "$crashed")")" = "$((restarts + 1)) true" ]; do
    [ $SECONDS -lt $deadline ] || fail "$crashed was not restarted by the restart policy within 30 s of a crash"
    sleep 0.5
  done
  put_keys "$new_leader" r 2
  converged=$(wait_converged "$new_leader") || fail "$crashed did not catch up after its crash"
  say "$crashed crashed (SIGKILL of its process), restart policy brought it back: $converged"
else
  say "skipped the restart-policy check: cannot signal the container's process (pid ${pid:-?}) from here"
fi

# ---- 5. stop all three gracefully (SIGTERM), then start them again. A node still running
# at the end of the grace period (15 s) would be SIGKILLed and exit 137; each must exit 0,
# within a few seconds of the "shutting down" line it logs on SIGTERM.
stop_started=$(date +%s.%N)
"${compose[@]}" stop -t 15 >>"$work/ops.log" 2>&1 || fail "compose stop failed"
stop_seconds=$(awk -v a="$stop_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
slowest=0
for service in "${services[@]}"; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(cid "$service")")
  [ "$code" = 0 ] || fail "$service exited with code $code on SIGTERM (expected 0)"
  signalled=$(docker logs "$(cid "$service")" 2>&1 | grep 'shutting down' | tail -1 | awk '{print $1}')
  finished=$(docker inspect -f '{{.State.FinishedAt}}' "$(cid "$service")")
  [ -n "$signalled" ] || fail "$service logged no 'shutting down' line on SIGTERM"
  took=$(awk -v a="$(date -d "$signalled" +%s.%N)" -v b="$(date -d "$finished" +%s.%N)" \
    'BEGIN { printf "%.3f", b - a }')
  awk -v t="$took" 'BEGIN { exit !(t < 5) }' ||
    fail "$service took $took s from SIGTERM to exit (expected a few seconds at most)"
  slowest=$(awk -v a="$slowest" -v b="$took" 'BEGIN { print (b > a ? b : a) }')
done
say "compose stop (${stop_seconds} s): all three exited 0 on SIGTERM, each within ${slowest} s of the signal"
"${compose[@]}" start >>"$work/ops.log" 2>&1 || fail "compose start failed"
leader=$(wait_leader kv3 "${services[@]}") || fail "no leader within ${election_deadline} s after restarting all"
check_keys kv3 "$all_seeds"
put_keys kv1 c 3
converged=$(wait_converged kv2) || fail "nodes did not converge after the full restart"
check_keys kv2 "$all_seeds"
say "restarted all three: leader $leader, all ${#acked[@]} acknowledged keys present, $converged"

verdict="PASS in $((SECONDS - started)) s, $((SECONDS - up_at)) s after the build (${#acked[@]} keys; leader kill, catch-up, crash restart, SIGTERM stop, full restart)"
