#!/usr/bin/env bash
# The main job: deploy the bundled demo app (demo/: a Caddy reverse proxy in
# front of an api served by busybox httpd, a worker and Redis) to this machine
# with the `local` environment of deploy.toml. No SSH server and no registry
# needed. Safe to run again: each run deploys a new release and keeps the last
# three.
#
# Each run deploys a real change of the api, as a developer's deploy would: the
# demo is committed into a git repository of its own (.deploy-demo-src/, with
# this run's time on the api's page) and that commit is deployed. When a
# release is already live, a prober asks the proxy for /health every 20 ms
# during the whole deploy and says how many requests failed: the api is
# switched start-first (app.zero_downtime), so none should.
#
# DEMO_PORT (default 18080) and DEMO_PROJECT (default deploy-demo) let two
# checkouts on one machine run the demo side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${DEMO_PORT:-18080}
project=${DEMO_PROJECT:-deploy-demo}

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v git >/dev/null 2>&1 || need+=(git)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/ensure-docker.sh
# The demo's base images, built FROM scratch from Debian's packages (Caddy's
# package is downloaded, not installed: no caddy service is started).
bash scripts/build-base-images.sh deploy-demo/busybox:1 deploy-demo/redis:1 deploy-demo/caddy:1
cargo build --release --quiet

# The demo's own repository: demo/ and deploy.toml as they are in this
# checkout, and a page that names this run, committed.
src=.deploy-demo-src
mkdir -p "$src"
[ -d "$src/.git" ] || git -C "$src" init -q -b main
rm -rf "$src/demo"
cp -R demo "$src/demo"
date -u '+deployed by scripts/demo.sh at %Y-%m-%d %H:%M:%S UTC' > "$src/demo/api/www/run.txt"
# The releases stay in .deploy-demo/ beside this repository.
sed -e "s|^path = \".deploy-demo\"|path = \"../.deploy-demo\"|" \
    -e "s|18080|$port|g" \
    -e "s|^name = \"deploy-demo\"|name = \"$project\"|" deploy.toml > "$src/deploy.toml"
git -C "$src" add -A
git -C "$src" -c user.name=demo -c user.email=demo@localhost commit -q -m "demo: $(cat "$src/demo/api/www/run.txt")"

# probe PORT OUT: GET /health through the proxy every 20 ms, one request at a
# time, until stopped (SIGTERM); then write "requests failed slowest_ms" to
# OUT. Plain bash (/dev/tcp, $EPOCHREALTIME): a request fails when it cannot
# connect or the answer is not 200 within 5 s (the proxy may hold a request
# while it retries: the slowest answer says how long).
probe() {
  local total=0 failed=0 slowest=0 line t0 took
  trap 'echo "$total $failed $((slowest / 1000))" > "$2"; exit 0' TERM
  while :; do
    total=$((total + 1))
    t0=${EPOCHREALTIME/./}
    if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
      printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
      if ! IFS= read -r -t 5 line <&3 || [[ $line != "HTTP/1."?" 200 "* ]]; then
        failed=$((failed + 1))
      fi
      exec 3<&-
    else
      failed=$((failed + 1))
    fi
    took=$((${EPOCHREALTIME/./} - t0))
    [ "$took" -le "$slowest" ] || slowest=$took
    sleep 0.02
  done 2>/dev/null
}

prober=""
began=$(date +%s%N)
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
if curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/health"; then
  probe "$port" "$counts" &
  prober=$!
else
  echo "Nothing answers at http://127.0.0.1:$port/ yet: this is the first deploy (run the demo again to see a switch under a prober)."
fi
status=0
./target/release/deploy --config "$src/deploy.toml" local "$@" || status=$?
if [ -n "$prober" ]; then
  kill -TERM "$prober"
  wait "$prober" || true
  read -r total failed slowest < "$counts"
  every=$(( ($(date +%s%N) - began) / 1000000 / (total > 0 ? total : 1) ))
  echo "Prober: $total requests to http://127.0.0.1:$port/health during the deploy (one at a time, 20 ms apart: one every $every ms), $failed failed; the slowest answer took $slowest ms."
fi
[ "$status" -eq 0 ] || exit "$status"
curl -fsS --retry 20 --retry-connrefused --retry-delay 1 -o /dev/null "http://127.0.0.1:$port/health"
echo "The demo answers at http://127.0.0.1:$port/ (health: http://127.0.0.1:$port/health; this run: http://127.0.0.1:$port/run.txt)"
