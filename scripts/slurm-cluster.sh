#!/usr/bin/env bash
# A Slurm test cluster on this machine: Debian's slurm-wlm and munge, as root, no systemd.
#
#   scripts/slurm-cluster.sh start [--accounting] [--nodes N]
#       Write slurm.conf, start munged, slurmctld and slurmd, wait until the nodes are idle.
#       --accounting also starts MariaDB and slurmdbd, so that sacct works.
#       --nodes N (N >= 1) makes a multi-node cluster instead of the single node named after this
#       host: nodes n1..nN, each a slurmd in its own network namespace (melissa-n1, ...) and UTS
#       namespace (hostname nK), reached at 127.1.0.1K... (127.1.0.(10+K)) over a veth pair
#       whose other end is on the bridge melissa-br0 (127.1.0.1, slurmctld's address). Only
#       loopback-range addresses, with net.ipv4.conf.*.route_localnet=1 on both ends. A job on a
#       node sees that node's network only: 127.0.0.1 there is the node itself.
#       Idempotent: a running cluster is kept, or restarted if it ran with other settings.
#   scripts/slurm-cluster.sh stop
#       Cancel every job, stop the daemons (slurmdbd, MariaDB and munged included), remove the
#       namespaces, veth pairs and bridge, and put route_localnet back as it was.
#   scripts/slurm-cluster.sh status
#       Exit 0 when the cluster accepts jobs.
#
# Install first: apt-get install -y --no-install-recommends slurm-wlm munge
# and for --accounting: mariadb-server slurmdbd slurm-wlm-mysql-plugin; --nodes needs iproute2
# and util-linux (nsenter, unshare).
# Why the settings are what they are: docs/schedulers.md. State, spool and logs live under
# $MELISSA_SLURM_DIR (default /tmp/melissa-slurm); slurm.conf and slurmdbd.conf go to /etc/slurm,
# where every Slurm command finds them, and are never written over if someone else wrote them.
set -euo pipefail

DIR=${MELISSA_SLURM_DIR:-/tmp/melissa-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARIADB_PID=/run/mysqld/mariadbd.pid  # MariaDB runs as user mysql, which cannot write $DIR
MARK="# Written by melissa scripts/slurm-cluster.sh"
HOST=$(hostname -s)
NODE=$HOST  # the single node; --nodes N: n1..nN instead
CPUS=8  # more than the real cores, so several 1-CPU jobs run at once (config_overrides)
NODE_CPUS=4  # of each node of a multi-node cluster
BRIDGE=melissa-br0
BRIDGE_ADDR=127.1.0.1
NODES_FILE=/run/melissa-slurm-nodes  # how many namespace nodes exist (for stop), with $DIR's path
LOCALNET_FILE=/run/melissa-slurm-route_localnet  # route_localnet before start changed it

NAME=slurm-cluster
LOGS="$DIR/*.log"
# shellcheck source=scripts/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

ours() {  # ours FILE: FILE is absent or was written by this script
  [[ ! -e $1 ]] || grep -qF "$MARK" "$1" || die "$1 exists and was not written by this script"
}

node_names() {  # the node names, one a line
  if ((nodes == 0)); then echo "$HOST"; else for k in $(seq "$nodes"); do echo "n$k"; done; fi
}
node_addr() { echo "127.1.0.$((10 + $1))"; }
# Every node idle (or busy): sinfo prints one state per node.
node_idle() {
  local states
  states=$(sinfo --noheader --Node --format=%t)
  (($(grep -cE '^(idle|mix|alloc)' <<<"$states") == $(node_names | wc -l)))
}
ctld_up() { scontrol ping | grep -q 'is UP'; }

# write_conf STORAGE_LINES: write slurm.conf; succeed only if it changed.
write_conf() {
  ours "$CONF"
  local mem_kib
  mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
  local ctld_host=$HOST node_lines kind="single-node" spool=$DIR/spool pid=$DIR/slurmd.pid
  local log=$DIR/slurmd.log
  node_lines="NodeName=$NODE CPUs=$CPUS RealMemory=$((mem_kib / 1024 - 1024)) State=UNKNOWN"
  if ((nodes > 0)); then
    # slurmctld only accepts its own host name, listening on the bridge's address.
    ctld_host="$HOST($BRIDGE_ADDR)" kind="$nodes-node" spool=$DIR/spool/%n
    pid=$DIR/slurmd.%n.pid log=$DIR/slurmd.%n.log node_lines=""
    for k in $(seq "$nodes"); do
      node_lines+="NodeName=n$k NodeAddr=$(node_addr "$k") CPUs=$NODE_CPUS"
      node_lines+=" RealMemory=$(((mem_kib / 1024 - 1024) / nodes)) State=UNKNOWN"$'\n'
    done
  fi
  cat >"$CONF.tmp" <<END_CONF
$MARK: $kind test cluster.
ClusterName=melissa
SlurmctldHost=$ctld_host
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
SlurmdSpoolDir=$spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$log
SlurmdParameters=config_overrides
${node_lines%$'\n'}
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
    stop_slurmds
    stop_daemon "$DIR/slurmctld.pid"
  fi
  if ((nodes > 0)); then
    start_network
  else
    remove_network
  fi
  start_munge
  if [[ $accounting == 1 ]]; then
    start_accounting
  fi
  if ! running "$DIR/slurmctld.pid"; then
    /usr/sbin/slurmctld -i  # -i: ignore state a previous run left behind
  fi
  wait_for 20 slurmctld ctld_up
  if ((nodes == 0)); then
    running "$DIR/slurmd.pid" || /usr/sbin/slurmd
  else
    for k in $(seq "$nodes"); do
      running "$DIR/slurmd.n$k.pid" && continue
      # nsenter, not `ip netns exec`, which remounts /sys (slurmd then finds no cgroup fs).
      nsenter --net="/var/run/netns/melissa-n$k" unshare --uts \
        sh -c "hostname n$k && exec /usr/sbin/slurmd -N n$k"
    done
  fi
  wait_for 30 "nodes $(node_names | paste -sd,)" node_idle
  if ((nodes == 0)); then
    echo "slurm-cluster: node $NODE idle with $CPUS CPUs,"\
      "accounting $([[ $accounting == 1 ]] && echo on || echo off) (state in $DIR)"
  else
    echo "slurm-cluster: nodes n1..n$nodes idle with $NODE_CPUS CPUs each at" \
      "$(node_addr 1)..$(node_addr "$nodes"), slurmctld at $BRIDGE_ADDR, accounting" \
      "$([[ $accounting == 1 ]] && echo on || echo off) (state in $DIR)"
  fi
}

# The namespace nodes' network: a bridge in this namespace, a veth pair per node.
start_network() {
  for cmd in ip nsenter unshare sysctl; do
    command -v $cmd >/dev/null || die "$cmd not found: apt-get install -y iproute2 util-linux procps"
  done
  local made=0
  [[ -s $NODES_FILE ]] && made=$(cat "$NODES_FILE")
  ((made == nodes)) && ip link show "$BRIDGE" >/dev/null 2>&1 && return
  remove_network
  [[ -e $LOCALNET_FILE ]] || sysctl -n net.ipv4.conf.all.route_localnet >"$LOCALNET_FILE"
  echo "$nodes" >"$NODES_FILE"
  sysctl -qw net.ipv4.conf.all.route_localnet=1
  add_bridge "$BRIDGE" "$BRIDGE_ADDR"
  for k in $(seq "$nodes"); do
    add_node "melissa-n$k" "melissa-v$k" "$BRIDGE" "$(node_addr "$k")"
  done
}

# Remove what start_network made (whatever node count it was made with).
remove_network() {
  local made=0 k
  [[ -s $NODES_FILE ]] && made=$(cat "$NODES_FILE")
  for k in $(seq "$made"); do
    remove_node "melissa-n$k" "melissa-v$k"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  if [[ -s $LOCALNET_FILE ]]; then
    sysctl -qw "net.ipv4.conf.all.route_localnet=$(cat "$LOCALNET_FILE")"
  fi
  rm -f "$NODES_FILE" "$LOCALNET_FILE"
}

stop_slurmds() {
  local pidfile
  for pidfile in "$DIR"/slurmd.pid "$DIR"/slurmd.*.pid; do
    [[ -e $pidfile ]] && stop_daemon "$pidfile"
  done
  return 0
}

stop() {
  if ctld_up 2>/dev/null; then
    scancel --full --quiet --user=root 2>/dev/null || true
  fi
  stop_slurmds
  stop_daemon "$DIR/slurmctld.pid"
  stop_daemon "$DIR/slurmdbd.pid"
  stop_daemon "$MARIADB_PID"
  stop_daemon /run/munge/munged.pid
  remove_network
  echo "slurm-cluster: stopped"
}

status() {
  [[ -s $NODES_FILE ]] && nodes=$(cat "$NODES_FILE")
  ctld_up && node_idle
}

USAGE="usage: $0 start [--accounting] [--nodes N] | stop | status"
accounting=0
nodes=0
case ${1:-} in
  start)
    shift
    while (($#)); do
      case $1 in
        --accounting) accounting=1 ;;
        --nodes)
          [[ ${2:-} =~ ^[1-9][0-9]*$ ]] && (($2 <= 200)) || die "--nodes takes 1 to 200, got '${2:-}'"
          nodes=$2; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
      esac
      shift
    done
    start ;;
  stop) stop ;;
  status) status ;;
  *) echo "$USAGE" >&2; exit 2 ;;
esac
