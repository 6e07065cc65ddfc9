#!/usr/bin/env bash
# What the benchmark needs beyond the tests: Ansible from PyPI, in a venv of its
# own so the machine's Python stays as it was. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
venv=/opt/deploy-bench-ansible
if ! "$venv/bin/ansible-playbook" --version 2>/dev/null | grep -q 'core 2.19.14'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check ansible-core==2.19.14
fi
