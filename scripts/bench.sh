#!/usr/bin/env bash
# The side-by-side benchmark: deploy vs the floor, the manual ssh script and
# Ansible, on sshd hosts of this machine. Installs what it needs (the test
# dependencies and Ansible from PyPI), builds the release binary, runs the
# harness in benches/compare/ and writes BENCHMARKS.md. Run as root.
#
#   bash scripts/bench.sh                 # N = 1, 4, 16; 5 runs each; BENCHMARKS.md
#   bash scripts/bench.sh --smoke         # N = 1, one run; report under target/ (CI)
#   bash scripts/bench.sh --hosts 1,4 --runs 5 --out /tmp/b.md
#   bash scripts/bench.sh --only-zero-downtime   # only its section of BENCHMARKS.md
#   bash scripts/bench.sh --only-variants        # only the variants section (v1/v2, http/exec)
#   bash scripts/bench.sh --only-build-once --runs 3   # [build] on, 16 hosts with engines of their own
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-bench-deps.sh
bash scripts/build-base-images.sh deploy-demo/busybox:1 deploy-demo/redis:1 deploy-demo/caddy:1 >/dev/null
cargo bench --quiet --bench compare -- "$@"
