#!/usr/bin/env bash
# A one-machine Slurm cluster for tests (Debian's slurm-wlm and munge), run as root.
#
#   scripts/slurm-local.sh start DIR   write DIR/slurm.conf, start munged (when none runs),
#                                      slurmctld and slurmd, wait for the node; prints
#                                      SLURM_CONF=DIR/slurm.conf for the clients
#   scripts/slurm-local.sh stop DIR    stop the daemons it started (by their pid files)
#
# The node is this host at 127.0.0.1 with its CPUs; processes are tracked without
# cgroups (proctrack/linuxproc), so it runs in a container or sandbox too. Installs
# slurm-wlm and munge with apt when missing.
set -euo pipefail

say() { echo "slurm-local: $*" >&2; }
die() { echo "slurm-local: error: $*" >&2; exit 2; }

cmd="${1:-}"
dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || die "usage: $0 start|stop DIR"
[[ "$(id -u)" == 0 ]] || die "run as root (the daemons, the munge key)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

stop() {
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
      || die "could not install slurm-wlm (Debian: apt-get install slurm-wlm munge)"
  fi
  local host cpus
  host="$(hostname -s)"
  cpus="$(nproc)"
  mkdir -p "$dir/state" "$dir/spool"
  # munge: a key of its own unless the machine has one; the socket munge's clients use.
  if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
      install -d -o munge -g munge -m 0700 /etc/munge
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
      chown munge:munge /etc/munge/munge.key
      chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --force
    pgrep -xn munged >"$dir/munged.pid"
  fi
  cat >"$dir/slurm.conf" <<EOF
ClusterName=labelflow
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued task waits out the credential lifetime (default 120 s) before it may start
# again; a local cluster has no slow nodes to wait for.
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=300
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start (see $dir/slurmctld.log)"
  /usr/sbin/slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $dir/slurmd.log)"
  for _ in $(seq 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM_CONF=$SLURM_CONF"
      return
    fi
    sleep 0.2
  done
  sinfo >&2 || true
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  stop
  die "the node did not come up in 20 s"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop DIR" ;;
esac
