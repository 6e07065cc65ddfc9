#!/usr/bin/env bash
# The main job: deploy the bundled demo app (demo/: an api served by busybox
# httpd, a worker and Redis) to this machine with the `local` environment of
# deploy.toml. No SSH server and no registry needed. Safe to run again: each run
# deploys a new release and keeps the last three.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/ensure-docker.sh
# The demo's base images, built FROM scratch from the packages above.
bash scripts/build-base-images.sh deploy-demo/busybox:1 deploy-demo/redis:1
cargo build --release --quiet
# The deploy ships the committed tree; --allow-dirty lets the demo run in a
# checkout with local edits (they are not deployed).
./target/release/deploy local --allow-dirty "$@"
curl -fsS --retry 20 --retry-connrefused --retry-delay 1 -o /dev/null http://127.0.0.1:18080/health
echo "The demo api answers at http://127.0.0.1:18080/ (health: http://127.0.0.1:18080/health)"
