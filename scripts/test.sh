#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what the tests need, then
# formatting, lints and every test (unit and integration). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
# Lints in the release profile too: the dependencies' build scripts (libgit2's
# and aws-lc's C builds, about two CPU-minutes) then run once for both.
cargo clippy --release --all-targets -- -D warnings
# Every test target, built in the release profile: the demo and the benchmark
# below reuse most of that build (the dependencies; not a debug build and a
# release build of everything).
cargo test --release --all-targets --no-run
# The fixture images, once, before the two test binaries below could both
# start building them.
bash scripts/build-base-images.sh deploy-test/busybox:1 deploy-test/redis:1 deploy-test/caddy:1 >/dev/null
# The swarm tests (tests/swarm_engine.rs) run Docker engines of their own, in
# namespaces of their own: they run beside the rest of the suite, with a
# TMPDIR of their own (the suite looks at what deploy leaves in its own), in
# a process group of their own that goes if this script is stopped. Their
# output is shown when both are done. Each test target of Cargo.toml is named
# in one of the two commands.
swarm_tmp=$(mktemp -d)
# As /tmp is: the hosts' logins (another user) read their sshd's files there.
chmod 1777 "$swarm_tmp"
swarm_log="$swarm_tmp.log"
TMPDIR="$swarm_tmp" setsid cargo test --release --test swarm_engine >"$swarm_log" 2>&1 &
swarm=$!
stop_swarm() {
  kill -- "-$swarm" 2>/dev/null || true
  rm -rf "$swarm_tmp" "$swarm_log"
}
trap stop_swarm EXIT
trap 'stop_swarm; exit 130' INT TERM
failed=0
# Three test threads on two cores: most of a test's time is waiting (for the
# engine, sshd, a container to boot), and the third thread fills it. On this
# project's 2-core CI machine the suite alone took 590 s with two and 477 s
# with three; beside the swarm tests, as here, 786 s with two (an earlier
# day's CI) and 522 s with three. Tests wait for conditions; the few that
# bound a wall time (a timeout must give up in time) leave it a margin.
cargo test --release --lib --bins --benches --test suite -- --test-threads 3 || failed=1
wait "$swarm" || failed=1
echo "--- cargo test --release --test swarm_engine (ran beside the suite):"
cat "$swarm_log"
[ "$failed" = 0 ] || { echo "tests failed" >&2; exit 1; }
# The README's main command, twice: a fresh deploy, then a second release over it.
bash scripts/demo.sh
bash scripts/demo.sh
# The benchmark harness, once on one host, so it cannot rot (figures not judged).
bash scripts/bench.sh --smoke
