#!/usr/bin/env bash
# Builds images FROM scratch out of this machine's Debian packages (no
# registry is needed): busybox (sh, httpd, nc...), Redis (redis-server,
# redis-cli, their libraries, and busybox) and, given a third tag, Caddy (the
# reverse proxy in front of the demo's api: Debian's caddy 2.6, one binary and
# the libraries it links). Skips an image the engine already has.
# Usage: build-base-images.sh BUSYBOX_TAG REDIS_TAG [CADDY_TAG]
set -euo pipefail
busybox_tag=$1
redis_tag=$2
caddy_tag=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$busybox_tag" >/dev/null 2>&1; then
  mkdir -p "$work/busybox"
  cp /bin/busybox "$work/busybox/busybox"
  cat > "$work/busybox/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
DOCKERFILE
  docker build -q -t "$busybox_tag" "$work/busybox" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
fi

if ! docker image inspect "$redis_tag" >/dev/null 2>&1; then
  root="$work/redis/rootfs"
  mkdir -p "$root/bin" "$root/tmp" "$root/data"
  for bin in /usr/bin/redis-server /usr/bin/redis-cli; do
    mkdir -p "$root$(dirname "$bin")"
    cp "$bin" "$root$bin"
    # Every library ldd names, the loader included.
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  cp /bin/busybox "$root/bin/busybox"
  for tool in sh sleep cat echo nc grep printf; do ln -sf busybox "$root/bin/$tool"; done
  cat > "$work/redis/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
WORKDIR /data
CMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
DOCKERFILE
  docker build -q -t "$redis_tag" "$work/redis" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
fi

if [ -n "$caddy_tag" ] && ! docker image inspect "$caddy_tag" >/dev/null 2>&1; then
  root="$work/caddy/rootfs"
  mkdir -p "$root/usr/bin" "$root/etc/caddy" "$root/data" "$root/config" "$root/tmp"
  if [ -x /usr/bin/caddy ]; then
    cp /usr/bin/caddy "$root/usr/bin/caddy"
  else
    # Only the package's files: installing it would also start a caddy
    # service on port 80 where systemd runs.
    (cd "$work" && { apt-get download -q caddy >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q caddy >/dev/null; }; })
    dpkg-deb -x "$work"/caddy_*.deb "$work/caddy/pkg"
    cp "$work/caddy/pkg/usr/bin/caddy" "$root/usr/bin/caddy"
  fi
  for lib in $(ldd "$root/usr/bin/caddy" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  chmod 1777 "$root/tmp"
  cat > "$work/caddy/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# Caddy keeps its state under $HOME / XDG dirs; the site's Caddyfile comes from
# the image built on this one.
ENV HOME=/data XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config
WORKDIR /data
ENTRYPOINT ["/usr/bin/caddy"]
CMD ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
DOCKERFILE
  docker build -q -t "$caddy_tag" "$work/caddy" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
fi
