#!/usr/bin/env bash
# Builds roundhouse/master and roundhouse/worker.
#
# Two ways, one result:
#   fast (default when the host's Go has the Dockerfiles' major.minor): both
#     binaries are compiled on the host with its module and build caches
#     (CGO_ENABLED=0, -trimpath, the Dockerfiles' ldflags), and each image is
#     built from the runtime stage of the module's own Dockerfile, taken out of
#     that file here, so user, healthcheck, volume, env and labels are defined
#     once and cannot drift (integration/images_test.go compares the results).
#   clean (CLEAN=1, or no suitable host Go): master/Dockerfile and
#     worker/Dockerfile as they are, the way a connected machine builds them.
#
# Each base image is used if it is present or can be pulled; when it cannot
# (no registry, as on many classroom networks), a local substitute is built
# under a name of the project's own, never an official tag:
#   golang          -> roundhouse/go-toolchain:<host go version>  (host's Go + busybox-static; clean builds only)
#   distroless      -> scratch                                    (the master is one static binary)
#   busybox         -> roundhouse/shell:busybox-static            (Debian's busybox-static)
# Override the public defaults with GO_IMAGE, MASTER_RUNTIME_IMAGE and
# WORKER_RUNTIME_IMAGE, the substitutes' names with GO_SUBSTITUTE and
# SHELL_SUBSTITUTE; MASTER_IMAGE and WORKER_IMAGE name the results.
# NO_CACHE=1 builds every layer anew (docker build --no-cache), for measuring.
#
# The legacy builder leaves the image a tag used to name, and in a clean
# build each build stage, as untagged images: the ones this script replaced
# are listed in docker/.build/replaced and removed here once nothing uses
# them (a running container keeps its image until compose recreates it, so
# the next run retries). A clean build keeps its latest build stage per
# module, which is the next clean build's layer cache; `images.sh prune`
# (make clean) removes those too.
set -euo pipefail
cd "$(dirname "$0")/.."

GO_IMAGE=${GO_IMAGE:-golang:1.26-bookworm}
MASTER_RUNTIME_IMAGE=${MASTER_RUNTIME_IMAGE:-gcr.io/distroless/static-debian12:nonroot}
WORKER_RUNTIME_IMAGE=${WORKER_RUNTIME_IMAGE:-busybox:1.37}
MASTER_IMAGE=${MASTER_IMAGE:-roundhouse/master:dev}
WORKER_IMAGE=${WORKER_IMAGE:-roundhouse/worker:dev}
SHELL_SUBSTITUTE=${SHELL_SUBSTITUTE:-roundhouse/shell:busybox-static}
CLEAN=$(echo "${CLEAN:-}" | sed 's/^\(0\|no\|false\)$//')
BUILD_DIR=docker/.build
BUILD_FLAGS=()
[ -n "$(echo "${NO_CACHE:-}" | sed 's/^\(0\|no\|false\)$//')" ] && BUILD_FLAGS+=(--no-cache)

say() { echo "images: [${SECONDS}s] $*" >&2; }

# module_version MODULE: VERSION if set, else the last commit that touched
# what MODULE is built from (the module and proto/; each Dockerfile builds with
# GOWORK=off), "-dirty" if those files have changes. Per module, so a change to
# the master leaves the worker's binary, image and containers as they were.
module_version() {
  if [ -n "${VERSION:-}" ]; then echo "$VERSION"; return; fi
  local c
  c=$(git log -1 --format=%H -- "$1" proto 2>/dev/null) || true
  [ -n "$c" ] || { echo dev; return; }
  c=$(git describe --always "$c")
  [ -z "$(git status --porcelain -- "$1" proto)" ] || c="$c-dirty"
  echo "$c"
}

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
      docker build -q "${BUILD_FLAGS[@]}" -t "$tag" - >/dev/null
  else
    docker build -q "${BUILD_FLAGS[@]}" -t "$tag" "$staging" >/dev/null
  fi
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# replaced ID...: note images this script made untagged, for prune.
replaced() {
  mkdir -p "$BUILD_DIR"
  local id
  for id in "$@"; do [ -n "$id" ] && echo "$id" >> "$BUILD_DIR/replaced"; done
  return 0
}

# prune removes the listed images that are still untagged; one in use by a
# container stays listed for the next run, one tagged since is not ours.
prune() {
  [ -f "$BUILD_DIR/replaced" ] || return 0
  local id keep=()
  for id in $(sort -u "$BUILD_DIR/replaced"); do
    case $(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null || echo gone) in
      0) docker image rm "$id" >/dev/null 2>&1 || keep+=("$id") ;;
    esac
  done
  if [ ${#keep[@]} -gt 0 ]; then printf '%s\n' "${keep[@]}" > "$BUILD_DIR/replaced"; else rm -f "$BUILD_DIR/replaced"; fi
}

# host_go_fits: the host's Go has the major.minor of the Dockerfiles' golang
# image, so binaries built with it are the ones a clean build would make.
host_go_fits() {
  local want have
  want=$(sed -n 's/^ARG GO_IMAGE=golang:\([0-9]*\.[0-9]*\).*/\1/p' master/Dockerfile)
  have=$(go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\.[0-9]*\).*/\1/p')
  [ -n "$want" ] && [ "$want" = "$have" ]
}

# runtime_dockerfile MODULE prints the module Dockerfile's global ARGs and its
# last stage, with COPY --from=build /out/... reading out/... of the build
# context instead: the runtime stage, defined only in the Dockerfile.
runtime_dockerfile() {
  awk '/^FROM /{n++} n==0 && /^ARG /{print} {s[NR]=$0; if ($0 ~ /^FROM /) last=NR}
       END{for (i=last; i<=NR; i++) print s[i]}' "$1/Dockerfile" |
    sed '/^COPY .*--from=build /{s/--from=build //; s# /out/# out/#;}'
}

# fast MODULE IMAGE RUNTIME: compile on the host, image from the runtime stage.
fast() {
  local module=$1 image=$2 runtime=$3 ctx="$BUILD_DIR/$1" v before src
  v=$(module_version "$module")
  say "building $image (host $(go env GOVERSION), runtime: $runtime)"
  rm -rf "$ctx" && mkdir -p "$ctx/out"
  runtime_dockerfile "$module" > "$ctx/Dockerfile"
  if grep -q -- '--from=' "$ctx/Dockerfile"; then
    say "$module/Dockerfile: the runtime stage copies other than /out/ from the build stage; build with CLEAN=1"
    exit 1
  fi
  (cd "$module" && GOOS=linux GOARCH=$GOARCH CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags "-s -w -X main.version=$v" -o "../$ctx/out/$module" .)
  # Anything else the runtime stage copies from /out/ is a directory the
  # build stage makes empty with mkdir (the master's /data).
  for src in $(sed -n 's#^COPY .*\(out/[^ ]*\) .*#\1#p' "$ctx/Dockerfile"); do
    [ -e "$ctx/$src" ] || mkdir -p "$ctx/$src"
  done
  before=$(image_id "$image")
  docker build -q "${BUILD_FLAGS[@]}" --build-arg RUNTIME_IMAGE="$runtime" \
    --label org.opencontainers.image.version="$v" -t "$image" "$ctx" >/dev/null
  [ "$before" = "$(image_id "$image")" ] || replaced "$before"
}

# clean MODULE IMAGE RUNTIME: the module's Dockerfile as it is. The build
# stage's result is the image before the last FROM step in the builder's log.
clean() {
  local module=$1 image=$2 runtime=$3 v before log stage old
  v=$(module_version "$module")
  say "building $image from $module/Dockerfile (go: $GO_IMAGE, runtime: $runtime)"
  before=$(image_id "$image")
  log=$(mktemp)
  trap 'rm -f "$log"' RETURN
  if ! docker build "${BUILD_FLAGS[@]}" -f "$module/Dockerfile" \
      --build-arg GO_IMAGE="$GO_IMAGE" --build-arg RUNTIME_IMAGE="$runtime" --build-arg VERSION="$v" \
      --label org.opencontainers.image.version="$v" -t "$image" . >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  [ "$before" = "$(image_id "$image")" ] || replaced "$before"
  stage=$(awk '/^ ---> [0-9a-f]+$/{id=$2} /^Step [0-9]+\/[0-9]+ : FROM /{if (id) s=id} END{print s}' "$log")
  old=$(cat "$BUILD_DIR/$module.stage" 2>/dev/null || true)
  if [ -n "$stage" ]; then
    mkdir -p "$BUILD_DIR"
    echo "$stage" > "$BUILD_DIR/$module.stage"
    [ -z "$old" ] || [ "$(image_id "$old")" = "$(image_id "$stage")" ] || replaced "$old"
  fi
}

# `images.sh prune` (make clean): also drop the build stages kept as cache.
if [ "${1:-}" = prune ]; then
  # A fast build leaves no *.stage: cat's failure must not end the script
  # (pipefail) before prune removes what docker/.build/replaced lists.
  { cat "$BUILD_DIR"/*.stage 2>/dev/null || true; } | while read -r id; do replaced "$id"; done
  rm -f "$BUILD_DIR"/*.stage
  prune
  exit 0
fi

if ! available "$MASTER_RUNTIME_IMAGE"; then
  MASTER_RUNTIME_IMAGE=scratch
fi
if ! available "$WORKER_RUNTIME_IMAGE"; then
  WORKER_RUNTIME_IMAGE=$SHELL_SUBSTITUTE
  substitute docker/offline/shell.Dockerfile "$WORKER_RUNTIME_IMAGE" no
fi

if [ -z "$CLEAN" ] && command -v go >/dev/null && host_go_fits; then
  GOARCH=$(docker version -f '{{.Server.Arch}}')
  fast master "$MASTER_IMAGE" "$MASTER_RUNTIME_IMAGE"
  fast worker "$WORKER_IMAGE" "$WORKER_RUNTIME_IMAGE"
else
  [ -n "$CLEAN" ] || say "no host Go of the Dockerfiles' version: building from the Dockerfiles"
  if ! available "$GO_IMAGE"; then
    GO_IMAGE=${GO_SUBSTITUTE:-roundhouse/go-toolchain:$(go env GOVERSION | sed 's/^go//')}
    substitute docker/offline/go-toolchain.Dockerfile "$GO_IMAGE" yes
  fi
  clean master "$MASTER_IMAGE" "$MASTER_RUNTIME_IMAGE"
  clean worker "$WORKER_IMAGE" "$WORKER_RUNTIME_IMAGE"
fi
prune
say "ready: $MASTER_IMAGE $WORKER_IMAGE"
