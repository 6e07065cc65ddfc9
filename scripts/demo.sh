#!/usr/bin/env bash
# The main job on this machine: validate the bundled demo app's deploy.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -- check
