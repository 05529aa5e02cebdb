#!/usr/bin/env bash
# A single-node Slurm (munge, slurmctld, slurmd, slurmrestd with JWT) for tests and local use.
#
#   scripts/slurm.sh start  [STATE_DIR]   install if needed, configure, start, wait until ready
#   scripts/slurm.sh stop   [STATE_DIR]   stop the daemons started from STATE_DIR
#   scripts/slurm.sh status [STATE_DIR]   exit 0 when everything answers
#   scripts/slurm.sh env    [STATE_DIR]   print the settings that point caesar-rest at it
#   scripts/slurm.sh clear-jobs [STATE_DIR]  restart slurmctld with its job state wiped
#
# STATE_DIR defaults to $CAESAR_SLURM_DIR or /tmp/caesar-slurm. Every command is idempotent:
# daemons are tracked by pid files in STATE_DIR, and a running one is left alone. Ports come
# from SLURMCTLD_PORT (6817), SLURMD_PORT (6818) and SLURMRESTD_PORT (6820); SLURM_CPUS sets
# the CPUs the node offers (default: the machine's cores; more is allowed, for benchmarks).
# Needs root (it runs the daemons as the munge and slurm users, slurmrestd as nobody). No
# systemd: the daemons are plain processes. Debian 12 ships Slurm 22.05 (REST API v0.0.38).
set -euo pipefail

CMD=${1:-start}
W=${2:-${CAESAR_SLURM_DIR:-/tmp/caesar-slurm}}
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
REST_PORT=${SLURMRESTD_PORT:-6820}
CPUS=${SLURM_CPUS:-$(nproc)}
export SLURM_CONF="$W/slurm.conf"

log() { echo "[slurm.sh] $*" >&2; }

alive() {  # alive PIDFILE: the process runs (a zombie left to a lazy init does not count)
  local pid
  [[ -s "$1" ]] || return 1
  pid=$(cat "$1")
  [[ -r /proc/$pid/stat ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmrestd >/dev/null \
     && command -v munged >/dev/null && [[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so ]]; then
    return
  fi
  log "installing Slurm and munge from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    slurm-wlm slurmrestd munge slurm-wlm-basic-plugins slurm-wlm-jwt-plugin >/dev/null
}

configure() {
  mkdir -p "$W"/{state,spool,log,run,munge,jobs}
  chmod 0755 "$W"
  chown munge:munge "$W/munge"
  chmod 0755 "$W/munge"
  chown slurm:slurm "$W/state" "$W/log" "$W/run"
  if [[ ! -s "$W/jwt_hs256.key" ]]; then
    dd if=/dev/urandom of="$W/jwt_hs256.key" bs=32 count=1 status=none
  fi
  chown slurm:slurm "$W/jwt_hs256.key"
  chmod 0600 "$W/jwt_hs256.key"
  local mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  cat >"$W/slurm.conf" <<EOF
# Written by caesar-rest scripts/slurm.sh; rewritten at every start.
ClusterName=caesar
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=socket=$W/munge/munge.socket.2
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$W/jwt_hs256.key
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/run/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
# Short waits: tests kill and time out jobs and expect them gone within seconds.
KillWait=2
MinJobAge=300
InactiveLimit=0
MessageTimeout=10
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 0644 "$W/slurm.conf"
}

start_munge() {
  if alive "$W/munge/munged.pid"; then return; fi
  runuser -u munge -- /usr/sbin/munged \
    --socket="$W/munge/munge.socket.2" \
    --pid-file="$W/munge/munged.pid" \
    --log-file="$W/munge/munged.log" \
    --seed-file="$W/munge/munged.seed" \
    --key-file=/etc/munge/munge.key
  local i
  for i in $(seq 50); do
    if munge -S "$W/munge/munge.socket.2" -n 2>/dev/null \
        | unmunge -S "$W/munge/munge.socket.2" >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  log "munged does not answer; see $W/munge/munged.log"; exit 1
}

start_slurm() {
  if ! alive "$W/run/slurmctld.pid"; then /usr/sbin/slurmctld "$@"; fi
  if ! alive "$W/slurmd.pid"; then /usr/sbin/slurmd -N localhost; fi
  if ! alive "$W/slurmrestd.pid"; then
    # v0.0.38 is the newest dialect 22.05 serves; without -s it also loads the slurmdbd
    # plugins and exits (no accounting database here).
    SLURM_JWT=daemon nohup /usr/sbin/slurmrestd -a rest_auth/jwt \
      -s openapi/v0.0.38,openapi/v0.0.37 -u nobody "127.0.0.1:$REST_PORT" \
      >"$W/log/slurmrestd.log" 2>&1 </dev/null &
    echo $! >"$W/slurmrestd.pid"
  fi
}

wait_ready() {
  local i
  for i in $(seq 300); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
        && curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REST_PORT/openapi/v3" \
           | grep -qE '^(200|401)$'; then
      return 0
    fi
    sleep 0.1
  done
  log "Slurm did not become ready; logs in $W/log"
  tail -n 20 "$W"/log/*.log >&2 || true
  return 1
}

stop_pid() {  # stop_pid PIDFILE: SIGTERM, wait, then SIGKILL
  local f=$1 pid i
  [[ -s "$f" ]] || return 0
  pid=$(cat "$f")
  if alive "$f"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$f" || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case "$CMD" in
  start)
    [[ $(id -u) -eq 0 ]] || { log "must run as root"; exit 1; }
    install_packages
    configure
    start_munge
    start_slurm
    wait_ready
    log "ready: slurmrestd on http://127.0.0.1:$REST_PORT (state in $W)"
    ;;
  stop)
    stop_pid "$W/slurmrestd.pid"
    stop_pid "$W/slurmd.pid"
    stop_pid "$W/run/slurmctld.pid"
    stop_pid "$W/munge/munged.pid"
    ;;
  clear-jobs)
    # Simulates a controller that lost its job records (e.g. restored without state).
    stop_pid "$W/run/slurmctld.pid"
    start_munge
    start_slurm -c
    wait_ready
    ;;
  status)
    alive "$W/munge/munged.pid" && alive "$W/run/slurmctld.pid" && alive "$W/slurmd.pid" \
      && alive "$W/slurmrestd.pid" && wait_ready
    ;;
  env)
    echo "SLURM_CONF=$W/slurm.conf"
    echo "CAESAR_REST_SLURM_URL=http://127.0.0.1:$REST_PORT"
    echo "CAESAR_REST_SLURM_KEYFILE=$W/jwt_hs256.key"
    echo "CAESAR_REST_SLURM_USER=$(id -un)"
    echo "CAESAR_REST_SLURM_PARTITION=debug"
    ;;
  *)
    echo "usage: $0 {start|stop|status|env|clear-jobs} [STATE_DIR]" >&2
    exit 2
    ;;
esac
