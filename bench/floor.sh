#!/usr/bin/env bash
# The floor: the release procedure's commands (bench/steps.sh) run directly on
# every host at once, as the hosts' user, with no SSH and no tool around them.
# Usage: floor.sh HOSTS_FILE SHA   (lines: ADDRESS PORT DIR PROJECT API_PORT)
set -euo pipefail
. "$(dirname "$0")/steps.sh"
SHA=$2
run() { runuser -u deploytest -- sh -c "$1"; }
pids=()
while read -r _ _ DIR PROJECT API_PORT; do
  release_steps &
  pids+=($!)
done <"$1"
for pid in "${pids[@]}"; do wait "$pid"; done
