#!/usr/bin/env bash
# Builds roundhouse/master and roundhouse/worker.
#
# Each base image is used if it is present or can be pulled; when it cannot
# (no registry, as on many classroom networks), a local substitute is built
# under a name of the project's own, never an official tag:
#   golang          -> roundhouse/go-toolchain:<host go version>  (host's Go + busybox-static)
#   distroless      -> scratch                                    (the master is one static binary)
#   busybox         -> roundhouse/shell:busybox-static            (Debian's busybox-static)
# Override the public defaults with GO_IMAGE, MASTER_RUNTIME_IMAGE and
# WORKER_RUNTIME_IMAGE; MASTER_IMAGE and WORKER_IMAGE name the results.
set -euo pipefail
cd "$(dirname "$0")/.."

GO_IMAGE=${GO_IMAGE:-golang:1.26-bookworm}
MASTER_RUNTIME_IMAGE=${MASTER_RUNTIME_IMAGE:-gcr.io/distroless/static-debian12:nonroot}
WORKER_RUNTIME_IMAGE=${WORKER_RUNTIME_IMAGE:-busybox:1.37}
MASTER_IMAGE=${MASTER_IMAGE:-roundhouse/master:dev}
WORKER_IMAGE=${WORKER_IMAGE:-roundhouse/worker:dev}
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
BUILD_DIR=docker/.build

say() { echo "images: $*" >&2; }

# available IMAGE: true if IMAGE is local or could be pulled within a minute.
available() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  say "pulling $1"
  timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

# busybox_static prints the path of a statically linked busybox, fetching
# Debian's busybox-static package when the host has none.
busybox_static() {
  local b
  for b in /bin/busybox /usr/bin/busybox "$BUILD_DIR/busybox/bin/busybox"; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then echo "$b"; return; fi
  done
  mkdir -p "$BUILD_DIR/busybox"
  say "fetching Debian's busybox-static"
  if ! (cd "$BUILD_DIR" && apt-get download busybox-static >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && (cd "$BUILD_DIR" && apt-get download busybox-static >/dev/null)
    else
      say "cannot fetch busybox-static: run 'sudo apt-get install busybox-static' and try again"
      exit 1
    fi
  fi
  dpkg-deb -x "$BUILD_DIR"/busybox-static_*.deb "$BUILD_DIR/busybox"
  echo "$BUILD_DIR/busybox/bin/busybox"
}

# substitute DOCKERFILE TAG WITH_GO: builds a substitute image from a tar
# stream, so the host's Go tree is not copied to disk first.
substitute() {
  local dockerfile=$1 tag=$2 with_go=$3 bb staging goroot
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  say "building local substitute $tag"
  bb=$(busybox_static)
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' RETURN
  cp "$dockerfile" "$staging/Dockerfile"
  cp "$bb" "$staging/busybox"
  cp /etc/ssl/certs/ca-certificates.crt "$staging/"
  if [ "$with_go" = yes ]; then
    goroot=$(go env GOROOT)
    tar -c -C "$staging" . \
        --transform "s,^\./\?$(basename "$goroot"),go," -C "$(dirname "$goroot")" \
        --exclude="$(basename "$goroot")/test" --exclude="$(basename "$goroot")/doc" \
        --exclude="$(basename "$goroot")/api" "$(basename "$goroot")" |
      docker build -q -t "$tag" - >/dev/null
  else
    docker build -q -t "$tag" "$staging" >/dev/null
  fi
}

if ! available "$GO_IMAGE"; then
  GO_IMAGE="roundhouse/go-toolchain:$(go env GOVERSION | sed 's/^go//')"
  substitute docker/offline/go-toolchain.Dockerfile "$GO_IMAGE" yes
fi
if ! available "$MASTER_RUNTIME_IMAGE"; then
  MASTER_RUNTIME_IMAGE=scratch
fi
if ! available "$WORKER_RUNTIME_IMAGE"; then
  WORKER_RUNTIME_IMAGE=roundhouse/shell:busybox-static
  substitute docker/offline/shell.Dockerfile "$WORKER_RUNTIME_IMAGE" no
fi

build() { # build MODULE IMAGE RUNTIME
  say "building $2 (go: $GO_IMAGE, runtime: $3)"
  docker build -q -f "$1/Dockerfile" \
    --build-arg GO_IMAGE="$GO_IMAGE" --build-arg RUNTIME_IMAGE="$3" --build-arg VERSION="$VERSION" \
    --label org.opencontainers.image.version="$VERSION" \
    -t "$2" . >/dev/null
}
build master "$MASTER_IMAGE" "$MASTER_RUNTIME_IMAGE"
build worker "$WORKER_IMAGE" "$WORKER_RUNTIME_IMAGE"
say "ready: $MASTER_IMAGE $WORKER_IMAGE"
