#!/usr/bin/env bash
# Celery for caesar-rest: the broker and result store, and workers, for tests and local use.
#
#   scripts/celery.sh services               make sure RabbitMQ (5672) and Redis (6379) run here
#   scripts/celery.sh start  [STATE_DIR] [-- WORKER ARGS]   start one worker (if not running)
#   scripts/celery.sh stop   [STATE_DIR]     warm-stop that worker (SIGTERM; SIGKILL after 30 s)
#   scripts/celery.sh status [STATE_DIR]     exit 0 when the worker runs
#
# STATE_DIR (default $CAESAR_CELERY_DIR or /tmp/caesar-celery) holds worker.pid and worker.log.
# The worker gets this shell's CAESAR_REST_* settings (database, folders, broker, queue); it runs
# `caesar-rest worker` from $CAESAR_REST_BIN (default: the repository's .venv) in its own
# session, so its process group id is its pid. Idempotent: a running worker is left alone.
set -euo pipefail

CMD=${1:-start}
shift || true
W=${CAESAR_CELERY_DIR:-/tmp/caesar-celery}
if [[ $# -gt 0 && $1 != "--" ]]; then W=$1; shift; fi
if [[ ${1:-} == "--" ]]; then shift; fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CAESAR_REST_BIN:-$REPO/.venv/bin/caesar-rest}

log() { echo "[celery.sh] $*" >&2; }

alive() {  # alive PIDFILE: the process runs (a zombie left to a lazy init does not count)
  local pid
  [[ -s "$1" ]] || return 1
  pid=$(cat "$1")
  [[ -r /proc/$pid/stat ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

services() {
  if ! port_open 6379; then
    command -v redis-server >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    }
    log "starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 >/dev/null
  fi
  if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
    }
    log "starting rabbitmq-server"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  local i
  for i in $(seq 600); do
    if port_open 6379 && port_open 5672; then return 0; fi
    sleep 0.1
  done
  log "RabbitMQ or Redis did not come up"; return 1
}

case "$CMD" in
  services)
    services
    ;;
  start)
    mkdir -p "$W"
    if alive "$W/worker.pid"; then exit 0; fi
    skip=0
    if [[ -f "$W/worker.log" ]]; then skip=$(wc -l <"$W/worker.log"); fi
    setsid "$BIN" worker "$@" >>"$W/worker.log" 2>&1 </dev/null &
    echo $! >"$W/worker.pid"
    # Ready when the worker says so in its log: after it has connected to the broker and its
    # pool processes have loaded the apps (slow on a busy machine).
    for i in $(seq 1200); do
      if tail -n +"$((skip + 1))" "$W/worker.log" | grep "^caesar-rest worker .* ready$" >/dev/null
      then exit 0; fi
      if ! alive "$W/worker.pid"; then log "worker exited; see $W/worker.log"; exit 1; fi
      sleep 0.1
    done
    log "worker not ready after 120 s; see $W/worker.log"; exit 1
    ;;
  stop)
    if alive "$W/worker.pid"; then
      pid=$(cat "$W/worker.pid")
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 300); do alive "$W/worker.pid" || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$W/worker.pid"
    ;;
  status)
    alive "$W/worker.pid"
    ;;
  *)
    echo "usage: $0 {services|start|stop|status} [STATE_DIR] [-- WORKER ARGS]" >&2
    exit 2
    ;;
esac
