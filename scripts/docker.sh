#!/usr/bin/env bash
# caesar-rest in containers on this machine (no registry, host networking only).
#
#   scripts/docker.sh engine     install Debian's Docker engine if missing, start dockerd if down
#   scripts/docker.sh images     build caesar-rest:<version> (API, worker, monitor),
#                                caesar-rest-job:<version> (Kubernetes jobs, sep) and
#                                caesar-rest-nginx:<version>
#   scripts/docker.sh up         the stack: nginx -> API, a Celery worker, the monitor
#   scripts/docker.sh down       stop and remove the stack's containers (dockerd stays)
#   scripts/docker.sh env        the stack's addresses and settings
#
# Caches (outside the repository, reused by every run): $CAESAR_DOCKER_CACHE (default
# /var/cache/caesar-rest) holds the Debian base (debian-bookworm.tar, made with mmdebstrap and
# imported as local/debian:bookworm) and the build context with its wheelhouse (pip download on
# this host: inside a build pip cannot reach the package index). BASE_IMAGE=python:3.11-slim-bookworm
# builds on the official image instead (a machine with a registry).
#
# The stack (containers caesar-stack-*) uses the machine's PostgreSQL, Redis and RabbitMQ with
# host networking (a bridge network gets private addresses, which are not routed here):
#   CAESAR_STACK_DB_URL   default postgresql+psycopg://postgres@127.0.0.1:5432/caesar_stack
#                         (the database is made when missing)
#   CAESAR_STACK_BROKER   default amqp://guest:guest@127.0.0.1:5672//
#   CAESAR_STACK_REDIS    default redis://127.0.0.1:6379/0
#   CAESAR_STACK_QUEUE    default caesar-stack (its own Celery queue)
#   CAESAR_STACK_PORT     nginx on 127.0.0.1 (default 18480); the API listens on PORT+1
#   CAESAR_STACK_DIR      the data and job folders (default /var/lib/caesar-stack), mounted at
#                         /srv/caesar-rest; containers run with a read-only root and /tmp in memory
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CAESAR_DOCKER_CACHE:-/var/cache/caesar-rest}
CTX=$CACHE/context
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n1)
IMAGE=${CAESAR_REST_IMAGE:-caesar-rest:$VERSION}
JOB_IMAGE=${CAESAR_REST_JOB_IMAGE:-caesar-rest-job:$VERSION}
NGINX_IMAGE=${CAESAR_REST_NGINX_IMAGE:-caesar-rest-nginx:$VERSION}
LOCAL_BASE=local/debian:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
# Installed from the wheelhouse too: the build backend of pyproject.toml (setuptools>=68), and
# what redis needs on Debian's Python 3.11.2 (async-timeout for python_full_version < 3.11.3;
# the host's newer 3.11 does not download it).
BUILD_REQUIREMENTS=(setuptools==84.2.1 wheel==0.48.0 async-timeout==5.0.1)
DB_URL=${CAESAR_STACK_DB_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/caesar_stack}
BROKER=${CAESAR_STACK_BROKER:-amqp://guest:guest@127.0.0.1:5672//}
REDIS=${CAESAR_STACK_REDIS:-redis://127.0.0.1:6379/0}
QUEUE=${CAESAR_STACK_QUEUE:-caesar-stack}
PORT=${CAESAR_STACK_PORT:-18480}
API_PORT=$((PORT + 1))
STACK=${CAESAR_STACK_DIR:-/var/lib/caesar-stack}
PREFIX=caesar-stack
export DOCKER_BUILDKIT=0  # the classic builder: this engine has no buildx plugin

log() { echo "[docker.sh] $*" >&2; }

engine() {
  if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
    log "installing docker.io and mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
  fi
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd (no bridge: containers use the host network)"
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
    >/var/log/caesar-dockerd.log 2>&1 </dev/null &
  local i
  for i in $(seq 300); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "dockerd did not start (see /var/log/caesar-dockerd.log)"; return 1
}

base() {  # local/debian:bookworm from Debian's packages, the tarball cached
  [[ $BASE_IMAGE == "$LOCAL_BASE" ]] || return 0
  docker image inspect "$LOCAL_BASE" >/dev/null 2>&1 && return 0
  mkdir -p "$CACHE"
  if [[ ! -s $CACHE/debian-bookworm.tar ]]; then
    log "making the Debian base with mmdebstrap"
    nice mmdebstrap --quiet --variant=minbase bookworm "$CACHE/debian-bookworm.part.tar"
    mv "$CACHE/debian-bookworm.part.tar" "$CACHE/debian-bookworm.tar"
  fi
  docker import "$CACHE/debian-bookworm.tar" "$LOCAL_BASE" >/dev/null
}

wheelhouse() {  # every pinned package as a wheel (the same lock: downloaded once)
  local stamp=$CTX/wheelhouse/.lock-sha256 sum
  sum=$(cat "$REPO/requirements.lock" <(printf '%s\n' "${BUILD_REQUIREMENTS[@]}") | sha256sum | cut -d' ' -f1)
  [[ -f $stamp && $(cat "$stamp") == "$sum" ]] && return 0
  log "downloading the wheelhouse"
  mkdir -p "$CTX/wheelhouse"
  nice pip download -q --disable-pip-version-check --only-binary=:all: -d "$CTX/wheelhouse" \
    -r "$REPO/requirements.lock" "${BUILD_REQUIREMENTS[@]}" 2> >(grep -v '^WARNING: Location' >&2)
  echo "$sum" >"$stamp"
}

context() {  # the files the Dockerfiles copy, next to the cached wheelhouse
  mkdir -p "$CTX/deploy"
  rsync -a --delete --exclude __pycache__ --exclude '*.pyc' "$REPO/src" "$CTX/"
  rsync -a "$REPO/requirements.lock" "$REPO/pyproject.toml" "$REPO/README.md" "$CTX/"
  rsync -a --delete --exclude secrets "$REPO/deploy/docker" "$REPO/deploy/gunicorn" \
    "$REPO/deploy/nginx" "$CTX/deploy/"
}

build() {  # build DOCKERFILE TAG [ARGS...]
  # The deps stage first, tagged TAG-deps: a tagged image is no dangling one, so `image prune`
  # leaves the installed dependencies as the cache of the next build (only the code layers
  # are built again when only the code changed). CAESAR_DOCKER_BUILD_LOG=FILE appends the
  # builder's steps ("Using cache" where a layer is reused) to FILE.
  local file=$1 tag=$2 out=/dev/null quiet=(-q) target
  shift 2
  if [[ -n ${CAESAR_DOCKER_BUILD_LOG:-} ]]; then out=$CAESAR_DOCKER_BUILD_LOG quiet=(); fi
  for target in deps runtime; do
    log "building $tag ($target)"
    local name=$tag
    [[ $target == deps ]] && name=$tag-deps
    echo "### $(date -u +%FT%TZ) $file --target $target -t $name" >>"$out"
    nice docker build "${quiet[@]}" --force-rm --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      "$@" --target "$target" -f "$CTX/deploy/docker/$file" -t "$name" "$CTX" >>"$out" \
      2> >(grep -v -e "DEPRECATED: The legacy builder" -e "BuildKit is currently disabled" -e "environment-variable." -e "^$" >&2)
  done
}

build_one() {  # build_one DOCKERFILE TAG [ARGS...]: a Dockerfile without a deps stage
  local file=$1 tag=$2
  shift 2
  log "building $tag"
  nice docker build -q --force-rm --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" \
    -f "$CTX/deploy/docker/$file" -t "$tag" "$CTX" >/dev/null \
    2> >(grep -v -e "DEPRECATED: The legacy builder" -e "BuildKit is currently disabled" -e "environment-variable." -e "^$" >&2)
}

images() {
  engine
  base
  wheelhouse
  context
  build Dockerfile "$IMAGE"
  build job.Dockerfile "$JOB_IMAGE" --build-arg APP_PACKAGES=sep
  build_one nginx.Dockerfile "$NGINX_IMAGE"
  docker image prune -f >/dev/null  # the superseded layers of earlier builds (not *-deps)
}

run() {  # run NAME [DOCKER RUN ARGS...] -- COMMAND...
  local name=$PREFIX-$1
  shift
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" --network host --read-only --tmpfs /tmp \
    --security-opt no-new-privileges:true --cap-drop ALL \
    --log-driver json-file --log-opt max-size=50m "$@" >/dev/null
}

app_env() {
  printf '%s\n' -v "$STACK:/srv/caesar-rest" \
    -e "CAESAR_REST_DB_URL=$DB_URL" -e CAESAR_REST_JOB_SCHEDULER=celery \
    -e "CAESAR_REST_BROKER_URL=$BROKER" -e "CAESAR_REST_RESULT_BACKEND=$REDIS" \
    -e "CAESAR_REST_CELERY_QUEUE=$QUEUE" -e CAESAR_REST_BACKEND_POLL_INTERVAL=0 \
    -e CAESAR_REST_LOG_JSON=true -e "CAESAR_REST_PORT=$API_PORT"
}

database() {  # make the stack's PostgreSQL database when missing
  local name=${DB_URL##*/} server=${DB_URL#*://}
  server=${server%%/*}
  local user=${server%%@*} hostport=${server#*@}
  [[ $server == *@* ]] || user=postgres
  user=${user%%:*}
  local host=${hostport%%:*} port=${hostport##*:}
  [[ $hostport == *:* ]] || port=5432
  if ! psql -h "$host" -p "$port" -U "$user" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    createdb -h "$host" -p "$port" -U "$user" "$name"
  fi
}

wait_healthy() {  # wait_healthy CONTAINER SECONDS
  local i state
  for i in $(seq $(($2 * 5))); do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || echo gone)
    [[ $state == healthy ]] && return 0
    [[ $state == unhealthy || $state == gone ]] && break
    sleep 0.2
  done
  log "$1 is not healthy ($state)"; docker logs --tail 50 "$1" >&2 || true; return 1
}

up() {
  engine
  for image in "$IMAGE" "$NGINX_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || { log "no $image: run 'make images'"; return 1; }
  done
  mkdir -p "$STACK"
  chown 1000:1000 "$STACK"
  database
  local envs
  mapfile -t envs < <(app_env)
  docker run --rm --network host --read-only --tmpfs /tmp "${envs[@]}" "$IMAGE" caesar-rest migrate >/dev/null
  run api "${envs[@]}" --health-interval 2s --health-start-period 60s "$IMAGE" \
    caesar-rest serve --host 127.0.0.1 --port "$API_PORT" --workers 1
  run worker "${envs[@]}" --no-healthcheck "$IMAGE" caesar-rest worker --hostname "caesar-stack@%h"
  run monitor "${envs[@]}" --no-healthcheck "$IMAGE" caesar-rest monitor
  mkdir -p "$STACK-nginx"
  sed -e "s/@NGINX_PORT@/$PORT/g" -e "s/@API_PORT@/$API_PORT/g" \
    "$REPO/deploy/nginx/caesar-rest-host.conf" >"$STACK-nginx/default.conf"
  wait_healthy "$PREFIX-api" 90
  run nginx -v "$STACK-nginx/default.conf:/etc/nginx/conf.d/default.conf:ro" \
    --health-cmd "bash -c 'exec 3<>/dev/tcp/127.0.0.1/$PORT'" \
    --health-interval 1s "$NGINX_IMAGE"
  wait_healthy "$PREFIX-nginx" 30
  log "up: http://127.0.0.1:$PORT/caesar/api/v1.0 (nginx) -> 127.0.0.1:$API_PORT (API)"
}

down() {
  command -v docker >/dev/null && docker info >/dev/null 2>&1 || return 0
  local names
  names=$(docker ps -aq --filter "name=^$PREFIX-")
  [[ -z $names ]] && return 0
  # SIGTERM: the API finishes its requests, the worker its jobs (warm shutdown).
  docker stop -t 60 $names >/dev/null
  docker rm $names >/dev/null
}

case "${1:-}" in
  engine) engine ;;
  base) engine; base ;;
  wheelhouse) wheelhouse ;;
  images) images ;;
  up) up ;;
  down) down ;;
  env)
    echo "CAESAR_STACK_URL=http://127.0.0.1:$PORT"
    echo "CAESAR_STACK_API_URL=http://127.0.0.1:$API_PORT"
    echo "CAESAR_STACK_DIR=$STACK"
    echo "CAESAR_REST_IMAGE=$IMAGE"
    echo "CAESAR_REST_JOB_IMAGE=$JOB_IMAGE"
    ;;
  *) echo "usage: $0 engine|base|wheelhouse|images|up|down|env" >&2; exit 2 ;;
esac
