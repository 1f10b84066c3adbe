#!/usr/bin/env bash
# A single-node Slurm cluster for tests and CI: Debian's slurm-wlm and munge, as root, no systemd.
#
#   scripts/slurm-cluster.sh start [--accounting]
#       Write slurm.conf, start munged, slurmctld and slurmd, wait until the node is idle.
#       --accounting also starts MariaDB and slurmdbd, so that sacct works. Idempotent: a running
#       cluster is kept, or restarted if it ran with the other accounting setting.
#   scripts/slurm-cluster.sh stop
#       Cancel every job, stop the daemons (slurmdbd, MariaDB and munged included).
#   scripts/slurm-cluster.sh status
#       Exit 0 when the cluster accepts jobs.
#
# Install first: apt-get install -y --no-install-recommends slurm-wlm munge
# and for --accounting: mariadb-server slurmdbd slurm-wlm-mysql-plugin
# Why the settings are what they are: docs/schedulers.md. State, spool and logs live under
# $MELISSA_SLURM_DIR (default /tmp/melissa-slurm); slurm.conf and slurmdbd.conf go to /etc/slurm,
# where every Slurm command finds them, and are never written over if someone else wrote them.
set -euo pipefail

DIR=${MELISSA_SLURM_DIR:-/tmp/melissa-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARIADB_PID=/run/mysqld/mariadbd.pid  # MariaDB runs as user mysql, which cannot write $DIR
MARK="# Written by melissa scripts/slurm-cluster.sh"
NODE=$(hostname -s)
CPUS=8  # more than the real cores, so several 1-CPU jobs run at once (config_overrides)

die() { echo "slurm-cluster: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${seconds} s; see $DIR/*.log"
    sleep 0.1
  done
}

running() {  # running PIDFILE: the process named in PIDFILE is alive
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

ours() {  # ours FILE: FILE is absent or was written by this script
  [[ ! -e $1 ]] || grep -qF "$MARK" "$1" || die "$1 exists and was not written by this script"
}

node_idle() { sinfo --noheader --nodes="$NODE" --format=%t | grep -qE '^(idle|mix|alloc)'; }
ctld_up() { scontrol ping | grep -q 'is UP'; }

# write_conf STORAGE_LINES: write slurm.conf; succeed only if it changed.
write_conf() {
  ours "$CONF"
  local mem_kib
  mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
  cat >"$CONF.tmp" <<END_CONF
$MARK: single-node test cluster.
ClusterName=melissa
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=1
ReturnToService=2
# Finished jobs stay visible to squeue this long (sacct, with accounting, sees them forever).
MinJobAge=300
$1
JobAcctGatherType=jobacct_gather/none
# Cancelled or timed-out jobs get SIGKILL this long after SIGTERM.
KillWait=5
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=$CPUS RealMemory=$((mem_kib / 1024 - 1024)) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
END_CONF
  if cmp -s "$CONF.tmp" "$CONF"; then
    rm "$CONF.tmp"
    return 1
  fi
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return  # a munged already answers
  fi
  [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing: reinstall munge"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged sh -c 'munge -n </dev/null | unmunge'
}

start_accounting() {
  for cmd in mariadbd slurmdbd; do
    [[ -x /usr/sbin/$cmd ]] || die "$cmd not found: apt-get install -y" \
      "--no-install-recommends mariadb-server slurmdbd slurm-wlm-mysql-plugin"
  done
  if ! mariadb-admin ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    runuser -u mysql -- /usr/sbin/mariadbd --pid-file="$MARIADB_PID" >"$DIR/mariadb.log" 2>&1 &
    wait_for 30 MariaDB mariadb-admin ping
  fi
  ours "$DBD_CONF"
  # slurmdbd runs as root and reaches MariaDB's root account through its unix socket.
  (umask 077; cat >"$DBD_CONF" <<END_DBD
$MARK: accounting of the single-node test cluster.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=melissa_slurm_acct
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
END_DBD
  )
  if ! running "$DIR/slurmctld.pid"; then
    # slurmctld -i numbers jobs from 1 again: forget the jobs of earlier runs, whose ids
    # sacct would mix with the new ones.
    stop_daemon "$DIR/slurmdbd.pid"
    mariadb -e "DROP DATABASE IF EXISTS melissa_slurm_acct"
  fi
  running "$DIR/slurmdbd.pid" || /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr --noheader list cluster
  if ! sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx melissa; then
    sacctmgr --immediate add cluster melissa >/dev/null
  fi
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (the daemons run as root, SlurmUser=root)"
  for cmd in slurmctld slurmd munged; do
    [[ -x /usr/sbin/$cmd ]] ||
      die "$cmd not found: apt-get install -y --no-install-recommends slurm-wlm munge"
  done
  local storage="AccountingStorageType=accounting_storage/none"
  if [[ $accounting == 1 ]]; then
    storage=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
  fi
  if write_conf "$storage"; then  # a new slurm.conf: daemons running on the old one restart
    stop_daemon "$DIR/slurmd.pid"
    stop_daemon "$DIR/slurmctld.pid"
  fi
  start_munge
  if [[ $accounting == 1 ]]; then
    start_accounting
  fi
  if ! running "$DIR/slurmctld.pid"; then
    /usr/sbin/slurmctld -i  # -i: ignore state a previous run left behind
  fi
  wait_for 20 slurmctld ctld_up
  if ! running "$DIR/slurmd.pid"; then
    /usr/sbin/slurmd
  fi
  wait_for 20 "node $NODE" node_idle
  echo "slurm-cluster: node $NODE idle with $CPUS CPUs," \
    "accounting $([[ $accounting == 1 ]] && echo on || echo off) (state in $DIR)"
}

stop_daemon() {  # stop_daemon PIDFILE: SIGTERM, then SIGKILL after 15 s
  local pidfile=$1 pid
  running "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  if ctld_up 2>/dev/null; then
    scancel --full --quiet --user=root 2>/dev/null || true
  fi
  stop_daemon "$DIR/slurmd.pid"
  stop_daemon "$DIR/slurmctld.pid"
  stop_daemon "$DIR/slurmdbd.pid"
  stop_daemon "$MARIADB_PID"
  stop_daemon /run/munge/munged.pid
  echo "slurm-cluster: stopped"
}

status() {
  ctld_up && node_idle
}

accounting=0
case ${1:-} in
  start)
    case ${2:-} in
      "") ;;
      --accounting) accounting=1 ;;
      *) echo "usage: $0 start [--accounting]" >&2; exit 2 ;;
    esac
    start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [--accounting] | stop | status" >&2; exit 2 ;;
esac
