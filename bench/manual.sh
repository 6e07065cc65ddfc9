#!/usr/bin/env bash
# The manual procedure as a script: one `ssh host '...'` line per step of
# bench/steps.sh, host after host, each a new SSH connection as a person's
# script would open. Host keys are checked against KNOWN_HOSTS.
# Usage: manual.sh HOSTS_FILE SHA KEY KNOWN_HOSTS   (lines: ADDRESS PORT DIR PROJECT API_PORT)
set -euo pipefail
. "$(dirname "$0")/steps.sh"
SHA=$2 KEY=$3 KNOWN=$4
run() {
  ssh -n -i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$KNOWN" \
    -p "$PORT" "deploytest@$ADDRESS" "$1"
}
while read -r ADDRESS PORT DIR PROJECT API_PORT; do
  release_steps
done <"$1"
