#!/usr/bin/env bash
# Builds two images FROM scratch out of this machine's Debian packages (no
# registry is needed): busybox (sh, httpd, nc...) and Redis (redis-server,
# redis-cli, their libraries, and busybox). Skips an image the engine already has.
# Usage: build-base-images.sh BUSYBOX_TAG REDIS_TAG
set -euo pipefail
busybox_tag=$1
redis_tag=$2
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
