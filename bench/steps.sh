# The release procedure of the baselines, one shell command per step, shared by
# bench/floor.sh (run on the host directly) and bench/manual.sh (one `ssh host
# '...'` line per step), and mirrored task for task by bench/ansible/deploy.yml.
# It does what `deploy` does on a host, minus what only `deploy` offers (staged
# release directories, locks, history, rollback): fetch the commit, build while
# the old containers serve, `up -d`, then the checklist.
#
# The caller sets DIR (a clone of the app), PROJECT (compose project), API_PORT,
# SHA and defines `run CMD`, which runs CMD on the host. The variant comes from
# the environment:
#   COMPOSE  "docker compose" (v2, the default) or "docker-compose" (v1)
#   CHECKS   "http" (the default: health through the published port) or "exec"
#            (the seed's checklist: health by wget inside the api's container,
#            Redis PING from the api and from the worker)
#   EXEC_VIA "compose" (the default: `compose exec -T`, what a person writes)
#            or "docker" (`docker exec` on the container's id: the floor, the
#            cheapest way to run a command in a container)

COMPOSE=${COMPOSE:-docker compose}
CHECKS=${CHECKS:-http}
EXEC_VIA=${EXEC_VIA:-compose}

# BENCH_TRACE=1: each step's command and milliseconds on stderr (the run's log).
traced() {
  if [ -n "${BENCH_TRACE:-}" ]; then
    local s=$(date +%s%N)
    run "$1"
    echo "step $(( ($(date +%s%N) - s) / 1000000 )) ms: $1" >&2
  else
    run "$1"
  fi
}

q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# The shell words that run "$2..." in service $1's container.
in_container() {
  local service=$1
  shift
  if [ "$EXEC_VIA" = docker ]; then
    echo "docker exec \$(docker ps -q --filter label=com.docker.compose.project=$p --filter label=com.docker.compose.service=$service --filter status=running | head -n 1) $*"
  else
    echo "$COMPOSE -p $p exec -T $service $*"
  fi
}

# Until "$1" succeeds, every 100 ms, 30 s at most.
poll() {
  echo "i=0; until $1; do i=\$((i+1)); [ \$i -lt 300 ] || exit 1; sleep 0.1; done"
}

release_steps() {
  local d p since logs
  d=$(q "$DIR")
  p=$(q "$PROJECT")
  traced "cd $d && git fetch -q origin && git checkout -q -f $(q "$SHA")"
  traced "cd $d && $COMPOSE -p $p build -q"
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  traced "cd $d && $COMPOSE -p $p up -d --remove-orphans"
  # The checklist: containers up (4 running), api health (polled every 100 ms,
  # 30 s at most), Redis answers PING, no refused connections logged.
  traced "test \"\$(docker ps -q --filter label=com.docker.compose.project=$p --filter status=running | wc -l)\" -eq 4"
  if [ "$CHECKS" = exec ]; then
    traced "cd $d && $(poll "$(in_container api wget -q -O /dev/null http://127.0.0.1:8000/health)")"
    traced "cd $d && $(in_container api sh -c "'printf \"PING\\r\\nQUIT\\r\\n\" | nc redis 6379'") | grep -q PONG"
  else
    traced "$(poll "curl -fsS -o /dev/null http://127.0.0.1:$API_PORT/health")"
  fi
  traced "cd $d && $(in_container worker redis-cli -h redis ping) | grep -q PONG"
  # compose v1 has no `logs --since`: the services' whole logs.
  if [ "$COMPOSE" = docker-compose ]; then
    logs="docker-compose -p $p logs --no-color api worker"
  else
    logs="$COMPOSE -p $p logs --since $since api worker"
  fi
  traced "cd $d && ! $logs 2>&1 | grep -qi 'connection refused'"
}
