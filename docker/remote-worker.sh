#!/usr/bin/env bash
# Joins a worker on this machine to a Roundhouse lab on another one, over
# mutual TLS, or removes it again; `make worker-join` and `make worker-leave`
# run it (README, "Remote workers"):
#   docker/remote-worker.sh join HOST:PORT    (the lab's published gRPC port)
#   docker/remote-worker.sh leave
# It reads:
#   WORKER_ID          the worker's name in the rotation (default: this machine's short hostname);
#                      the container is roundhouse-remote-<WORKER_ID>
#   ROUNDHOUSE_CERTS   directory of ca.pem, worker.pem, worker-key.pem (default certs)
#   WORKER_TOKEN_FILE  a file holding the lab's worker token, else
#   MASTER_WORKER_TOKEN from the environment or .env
#   WORKER_TLS_SERVER_NAME  the name to check in the master's certificate
#                      (default: HOST; `master` fits every lab certificate)
#   WORKER_IMAGE, WORKER_SLOTS, WORKER_LABELS, WORKER_DRAIN_TIMEOUT,
#   WORKER_MEMORY_LIMIT, WORKER_CPUS, WORKER_TMP_SIZE, LOG_LEVEL, LOG_FORMAT
#                      as for the lab's workers (compose.yaml)
#   JOIN_WAIT          seconds to wait for the worker to register (default 60; 0: don't)
# Only the three certificate files and the token enter the container, each
# read-only: never ca-key.pem, which can sign certificates.
set -euo pipefail
cd "$(dirname "$0")/.."

WHO=worker-${1:-join} # in messages: worker-join or worker-leave
say() { echo "$WHO: $*" >&2; }
die() { say "$*"; exit 1; }

WORKER_ID=${WORKER_ID:-$(hostname -s 2>/dev/null || hostname)}
[[ $WORKER_ID =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "WORKER_ID '$WORKER_ID' is not 1-64 characters of A-Z a-z 0-9 . _ -"
NAME=roundhouse-remote-$WORKER_ID
LABEL=roundhouse.remote-worker

leave() {
  if ! docker container inspect "$NAME" >/dev/null 2>&1; then
    local others
    others=$(docker ps -a --filter "label=$LABEL" --format '{{.Names}}' | tr '\n' ' ')
    say "no container $NAME on this machine; remote workers here: ${others:-none}"
    exit 1
  fi
  # docker stop sends SIGTERM and waits out the stop timeout set at join:
  # the worker drains its running tasks and says goodbye to the master.
  docker stop "$NAME" >/dev/null
  docker rm "$NAME" >/dev/null
  echo "worker-leave: removed $NAME"
}

# readable_by_worker FILE: the container runs as uid 65532, which must be
# able to read FILE through the bind mount.
readable_by_worker() {
  local mode owner
  read -r mode owner < <(stat -c '%a %u' "$1")
  (( 8#$mode & 4 )) || { [ "$owner" = 65532 ] && (( 8#$mode & 0400 )); }
}

join() {
  local master=${1:-}
  [[ $master =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$ ]] ||
    die "MASTER='$master' is not host:port: make worker-join MASTER=lab.example:50051 (the lab's published gRPC port)"
  local certs=${ROUNDHOUSE_CERTS:-certs} f
  for f in ca.pem worker.pem worker-key.pem; do
    [ -f "$certs/$f" ] || die "$certs/$f is missing: copy ca.pem, worker.pem and worker-key.pem from the lab's certs/ (never ca-key.pem), or set ROUNDHOUSE_CERTS"
    readable_by_worker "$certs/$f" || die "$certs/$f is not readable by the container's uid 65532: chmod 644 it (or chown 65532)"
  done
  certs=$(cd "$certs" && pwd)

  local args=(run -d --name "$NAME" --hostname "$WORKER_ID"
    --label "$LABEL=$WORKER_ID" --label "roundhouse.master=$master"
    # The hardening of compose.yaml's workers: a task can do anything its
    # worker can, so the container is the fence around it.
    --restart unless-stopped --stop-timeout 40 --init
    --read-only --tmpfs "/tmp:rw,exec,nosuid,nodev,mode=1777,size=${WORKER_TMP_SIZE:-64m}"
    --cap-drop ALL --security-opt no-new-privileges:true
    --pids-limit 256 --memory "${WORKER_MEMORY_LIMIT:-256m}" --cpus "${WORKER_CPUS:-1}"
    # A lab on this same machine is host.docker.internal, as on Docker Desktop.
    --add-host host.docker.internal:host-gateway
    -e "WORKER_MASTER_ADDR=$master" -e "WORKER_ID=$WORKER_ID"
    -e "WORKER_SLOTS=${WORKER_SLOTS:-1}" -e "WORKER_DRAIN_TIMEOUT=${WORKER_DRAIN_TIMEOUT:-30s}"
    -e "LOG_LEVEL=${LOG_LEVEL:-info}" -e "LOG_FORMAT=${LOG_FORMAT:-text}"
    -e WORKER_TLS_CA=/certs/ca.pem -e WORKER_TLS_CERT=/certs/worker.pem -e WORKER_TLS_KEY=/certs/worker-key.pem
    -v "$certs/ca.pem:/certs/ca.pem:ro" -v "$certs/worker.pem:/certs/worker.pem:ro"
    -v "$certs/worker-key.pem:/certs/worker-key.pem:ro")
  [ -z "${WORKER_LABELS:-}" ] || args+=(-e "WORKER_LABELS=$WORKER_LABELS")
  [ -z "${WORKER_TLS_SERVER_NAME:-}" ] || args+=(-e "WORKER_TLS_SERVER_NAME=$WORKER_TLS_SERVER_NAME")

  # The token: a file, mounted like a Docker secret, keeps it out of what
  # docker inspect shows; else the variable, passed by name so that it is
  # not on this command line either.
  if [ -n "${WORKER_TOKEN_FILE:-}" ]; then
    [ -f "$WORKER_TOKEN_FILE" ] || die "WORKER_TOKEN_FILE $WORKER_TOKEN_FILE is missing"
    readable_by_worker "$WORKER_TOKEN_FILE" || die "$WORKER_TOKEN_FILE is not readable by the container's uid 65532: chmod 644 it (or chown 65532)"
    args+=(-e WORKER_TOKEN_FILE=/run/secrets/worker_token
      -v "$(cd "$(dirname "$WORKER_TOKEN_FILE")" && pwd)/$(basename "$WORKER_TOKEN_FILE"):/run/secrets/worker_token:ro")
  else
    # As compose reads .env (and the Makefile, docker/lab.sh): the last
    # line that sets it, with or without `export ` and quotes.
    if [ -z "${MASTER_WORKER_TOKEN:-}" ] && [ -f .env ]; then
      MASTER_WORKER_TOKEN=$(sed -n "s/^\(export \)\{0,1\}MASTER_WORKER_TOKEN=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\} *$/\2/p" .env | tail -n 1)
    fi
    [ -n "${MASTER_WORKER_TOKEN:-}" ] || die "no worker token: set WORKER_TOKEN_FILE to a file holding the lab's MASTER_WORKER_TOKEN (from its .env), or MASTER_WORKER_TOKEN"
    export WORKER_TOKEN=$MASTER_WORKER_TOKEN
    args+=(-e WORKER_TOKEN)
  fi
  args+=("${WORKER_IMAGE:-roundhouse/worker:dev}")

  if docker container inspect "$NAME" >/dev/null 2>&1; then
    die "$NAME exists already: make worker-leave WORKER_ID=$WORKER_ID first, or pick another WORKER_ID"
  fi
  echo "docker ${args[*]}"
  docker "${args[@]}" >/dev/null

  # The image's healthcheck turns healthy once the worker is registered
  # with the master: wait for that, so a wrong address, certificate or
  # token shows here and not only in the logs.
  local wait=${JOIN_WAIT:-60} deadline status
  [ "$wait" -gt 0 ] || { echo "worker-join: started $NAME"; return; }
  deadline=$((SECONDS + wait))
  while status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME"); [ "$status" != healthy ]; do
    if [ $SECONDS -ge $deadline ]; then
      docker logs --tail 5 "$NAME" 2>&1 | sed 's/^/  /' >&2
      die "$NAME has not registered with $master within ${wait}s (its last log lines above); it keeps retrying: make worker-leave WORKER_ID=$WORKER_ID removes it"
    fi
    sleep 1
  done
  echo "worker-join: $NAME registered with $master as $WORKER_ID (make worker-leave WORKER_ID=$WORKER_ID removes it)"
}

case ${1:-} in
  join) join "${2:-}" ;;
  leave) leave ;;
  *) echo "usage: $0 join HOST:PORT | leave" >&2; exit 2 ;;
esac
