# The release procedure of the baselines, one shell command per step, shared by
# bench/floor.sh (run on the host directly) and bench/manual.sh (one `ssh host
# '...'` line per step), and mirrored task for task by bench/ansible/deploy.yml.
# It does what `deploy` does on a host, minus what only `deploy` offers (staged
# release directories, locks, history, rollback): fetch the commit, build while
# the old containers serve, `up -d`, then the checklist.
#
# The caller sets DIR (a clone of the app), PROJECT (compose project), API_PORT,
# SHA and defines `run CMD`, which runs CMD on the host.

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

release_steps() {
  local d p since
  d=$(q "$DIR")
  p=$(q "$PROJECT")
  traced "cd $d && git fetch -q origin && git checkout -q -f $(q "$SHA")"
  traced "cd $d && docker compose -p $p build -q"
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  traced "cd $d && docker compose -p $p up -d --remove-orphans"
  # The checklist: containers up, api health 200 (polled every 100 ms, 30 s at
  # most), Redis answers PING from the worker, no refused connections logged.
  traced "cd $d && test \"\$(docker compose -p $p ps --status running -q | wc -l)\" -eq 4"
  traced "i=0; until curl -fsS -o /dev/null http://127.0.0.1:$API_PORT/health; do i=\$((i+1)); [ \$i -lt 300 ] || exit 1; sleep 0.1; done"
  traced "cd $d && docker compose -p $p exec -T worker redis-cli -h redis ping | grep -q PONG"
  traced "cd $d && ! docker compose -p $p logs --since $since api worker 2>&1 | grep -qi 'connection refused'"
}
