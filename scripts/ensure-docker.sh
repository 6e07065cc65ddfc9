#!/usr/bin/env bash
# Makes sure a Docker engine answers: started before the session on this kind of
# machine; started here (in the background) where it is not.
set -euo pipefail
if docker version >/dev/null 2>&1; then exit 0; fi
echo "starting dockerd"
setsid /usr/sbin/dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && exit 0; sleep 0.5; done
docker version >/dev/null
