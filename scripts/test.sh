#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what the tests need, then
# formatting, lints and every test (unit and integration). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# The README's main command, twice: a fresh deploy, then a second release over it.
bash scripts/demo.sh
bash scripts/demo.sh
# The benchmark harness, once on one host, so it cannot rot (figures not judged).
bash scripts/bench.sh --smoke
