#!/usr/bin/env bash
# Stops the processes listed in a pids file (one per line) and waits until they are gone:
# SIGTERM, up to 10 s for a clean exit, then SIGKILL. They are not this shell's children,
# so `wait` cannot see them; a caller that reuses their ports or data dirs right after
# must not race their shutdown.
#
#   scripts/stop-pids.sh DIR/pids
set -uo pipefail
pids_file=${1:?pids file}
[ -f "$pids_file" ] || exit 0
mapfile -t pids < "$pids_file"
[ ${#pids[@]} -gt 0 ] || exit 0
kill -TERM "${pids[@]}" 2>/dev/null
for _ in $(seq 100); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1
done
echo "still running after 10 s, killing: ${pids[*]}" >&2
kill -KILL "${pids[@]}" 2>/dev/null
exit 0
