#!/usr/bin/env bash
# An OAR 2.5 test cluster on this machine: Debian's oar-server, oar-node and oar-user, with
# PostgreSQL and OpenSSH, as root, no systemd.
#
#   scripts/oar-cluster.sh start [--nodes N]
#       Set /etc/oar/oar.conf's keys below, start PostgreSQL (Debian's cluster 15/main on
#       127.0.0.1:5432) and create the oar database, start the OAR server (Almighty, port 6666),
#       and make N nodes (default 3) o1..oN: each a network namespace melissa-oK (and UTS
#       namespace, hostname oK) reached at 127.1.1.(10+K) over a veth pair whose other end is on
#       the bridge melissa-br1 (127.1.1.1, where the nodes reach the server), with the sshd on
#       port 6667 that OAR starts its jobs through (as user oar, with oar's own keys). Each node
#       has 4 cores, resources with properties host=oK, cpu=K, core. Only loopback-range
#       addresses, with route_localnet=1 on the bridge, the veths and the nodes' interfaces
#       (never on this namespace's `all`, which the Slurm cluster script owns). Coexists with
#       scripts/slurm-cluster.sh (its nodes are melissa-nK on melissa-br0, 127.1.0.x).
#       Idempotent: a running cluster is kept, or rebuilt if it ran with another node count.
#   scripts/oar-cluster.sh stop
#       Delete every job, stop the sshds, the OAR server and PostgreSQL, drop the oar database,
#       remove the namespaces, veth pairs and bridge.
#   scripts/oar-cluster.sh status
#       Exit 0 when every node is Alive.
#
# Install first: apt-get install -y --no-install-recommends oar-server oar-server-pgsql oar-node
# oar-user oar-user-pgsql postgresql openssh-server openssh-client iproute2 util-linux
# Why the settings are what they are: docs/schedulers.md. Logs live under $MELISSA_OAR_DIR
# (default /tmp/melissa-oar), OAR's own in /var/log/oar.log.
set -euo pipefail

DIR=${MELISSA_OAR_DIR:-/tmp/melissa-oar}
CONF=/etc/oar/oar.conf
PG_VERSION=15
PG_CLUSTER=main
BRIDGE=melissa-br1
BRIDGE_ADDR=127.1.1.1
NODE_CORES=4
NODES_FILE=/run/melissa-oar-nodes  # how many namespace nodes exist (for stop)
SERVER_PID=/var/run/oar-server.pid  # written by /usr/sbin/oar-server
DB_PASSWORD=melissa-oar  # a local test database reached on 127.0.0.1 only
SERVER_NAME=melissa-oar-server  # the bridge's address, in /etc/hosts
HOSTS_LINE="$BRIDGE_ADDR $SERVER_NAME  # melissa scripts/oar-cluster.sh"

NAME=oar-cluster
LOGS="$DIR/*.log and /var/log/oar.log"
# shellcheck source=scripts/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

node_addr() { echo "127.1.1.$((10 + $1))"; }

# set_conf KEY VALUE: KEY="VALUE" in oar.conf (the line replaced, or added).
set_conf() {
  if grep -qE "^#?$1=" "$CONF"; then
    sed -i -E "0,/^#?$1=.*/s||$1=\"$2\"|" "$CONF"
  else
    echo "$1=\"$2\"" >>"$CONF"
  fi
}

write_conf() {
  set_conf DB_BASE_PASSWD "$DB_PASSWORD"
  set_conf DB_BASE_PASSWD_RO "$DB_PASSWORD-ro"
  # The nodes tell the server that a job ended (oarexec -> Almighty) at the bridge's address,
  # by a name: OAR replaces an address 127.* with the server's host name, which they can't reach.
  set_conf SERVER_HOSTNAME "$SERVER_NAME"
  # No cpuset/cgroup confinement: namespace nodes share this machine's cgroups.
  sed -i -E 's/^(JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD=)/#\1/' "$CONF"
  # Gaps between jobs on a core (default 60 s) only slow a test cluster down.
  set_conf SCHEDULER_JOB_SECURITY_TIME 1
  # OAR starts a batch job as `bash -c SCRIPT` with BASH_ENV=~oar/.batch_job_bashrc, which
  # sources the user's ~/.bashrc; BASH_ENV stays exported, so every bash the job starts sources
  # it again (a ~/.bashrc that runs bash scripts, like `pyenv init`, then recurses forever).
  local rc=/var/lib/oar/.batch_job_bashrc
  grep -qx 'unset BASH_ENV' "$rc" || sed -i '0,/^source/s//unset BASH_ENV\n&/' "$rc"
}

# The test cluster runs its jobs as root (who runs the tests): drop OAR's admission rule
# against root's jobs (a real cluster keeps it, and its users are not root).
allow_root() {
  local rule
  rule=$(oaradmissionrules -s 2 -f 2>/dev/null) || return 0
  grep -q 'root and oar users are not allowed' <<<"$rule" || return 0
  oaradmissionrules -m 2 -N >/dev/null
}

pg_up() { runuser -u postgres -- psql -qAtc 'select 1' >/dev/null; }

start_database() {
  [[ -d /etc/postgresql/$PG_VERSION/$PG_CLUSTER ]] ||
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >/dev/null
  if ! pg_up 2>/dev/null; then
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    wait_for 30 PostgreSQL pg_up
  fi
  if ! oar-database --check >/dev/null 2>&1; then
    oar-database --create --db-is-local -y >"$DIR/oar-database.log" 2>&1 ||
      die "oar-database --create failed: see $DIR/oar-database.log"
  fi
}

# The namespace nodes' network: a bridge in this namespace, a veth pair per node.
start_network() {
  local made=0 k
  [[ -s $NODES_FILE ]] && made=$(cat "$NODES_FILE")
  ((made == nodes)) && ip link show "$BRIDGE" >/dev/null 2>&1 && return
  remove_network
  echo "$nodes" >"$NODES_FILE"
  add_bridge "$BRIDGE" "$BRIDGE_ADDR"
  grep -qxF "$HOSTS_LINE" /etc/hosts || echo "$HOSTS_LINE" >>/etc/hosts
  for k in $(seq "$nodes"); do
    add_node "melissa-o$k" "melissa-w$k" "$BRIDGE" "$(node_addr "$k")"
  done
}

remove_network() {
  local made=0 k
  [[ -s $NODES_FILE ]] && made=$(cat "$NODES_FILE")
  for k in $(seq "$made"); do
    stop_daemon "$DIR/sshd.o$k.pid"
    # What still runs on the node (jobs, their oarexec) goes with it.
    # shellcheck disable=SC2046
    kill -KILL $(ip netns pids "melissa-o$k" 2>/dev/null) 2>/dev/null || true
    remove_node "melissa-o$k" "melissa-w$k"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  if grep -qxF "$HOSTS_LINE" /etc/hosts; then
    grep -vxF "$HOSTS_LINE" /etc/hosts >/etc/hosts.melissa-oar || true
    cat /etc/hosts.melissa-oar >/etc/hosts  # in place: /etc/hosts may be a bind mount
    rm /etc/hosts.melissa-oar
  fi
  rm -f "$NODES_FILE"
}

start_sshds() {
  local k
  mkdir -p /run/sshd
  for k in $(seq "$nodes"); do
    running "$DIR/sshd.o$k.pid" && continue
    nsenter --net="/var/run/netns/melissa-o$k" unshare --uts sh -c "hostname o$k && exec \
      /usr/sbin/sshd -f /etc/oar/sshd_config -o PidFile=$DIR/sshd.o$k.pid \
      -o ListenAddress=$(node_addr "$k") -E $DIR/sshd.o$k.log"
  done
  for k in $(seq "$nodes"); do
    wait_for 20 "sshd of node o$k" runuser -u oar -- /usr/bin/ssh -p 6667 -o BatchMode=yes \
      "$(node_addr "$k")" true
  done
}

# One resource per core; nodes already in the database are kept.
add_resources() {
  local known k c core
  for property in cpu core; do oarproperty -a "$property" >/dev/null 2>&1 || true; done
  oarproperty -c -a host >/dev/null 2>&1 || true
  known=$(oarnodes -l 2>/dev/null || true)
  core=$(oarnodesetting --last-property-value core 2>/dev/null || true)
  core=${core:-0}
  for k in $(seq "$nodes"); do
    grep -qx "$(node_addr "$k")" <<<"$known" && continue
    for c in $(seq "$NODE_CORES"); do
      core=$((core + 1))
      oarnodesetting -a -h "$(node_addr "$k")" -p host="o$k" -p cpu="$k" -p core="$core" \
        -p cpuset=$((c - 1)) >/dev/null
    done
  done
  # Nodes of an earlier, larger cluster are Dead: no job may wait for them.
  for addr in $known; do
    [[ ${addr#127.1.1.} -le $((10 + nodes)) ]] && continue
    oarnodesetting -s Dead -h "$addr" >/dev/null
  done
}

alive() {  # every node's resources Alive
  local states
  states=$(oarnodes -s 2>/dev/null) || return 1
  (($(grep -c ': Alive' <<<"$states") == nodes * NODE_CORES))
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root"
  for cmd in oar-server oar-database oarsub oarnodesetting sshd pg_ctlcluster ip nsenter unshare; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y" \
      "--no-install-recommends oar-server oar-server-pgsql oar-node oar-user oar-user-pgsql" \
      "postgresql openssh-server openssh-client iproute2 util-linux"
  done
  mkdir -p "$DIR"
  write_conf
  start_database
  start_network
  start_sshds
  if ! running "$SERVER_PID"; then
    oar-server
  fi
  add_resources
  allow_root
  local k
  for k in $(seq "$nodes"); do
    oarnodesetting -s Alive -h "$(node_addr "$k")" >/dev/null
  done
  wait_for 30 "nodes o1..o$nodes" alive
  echo "oar-cluster: nodes o1..o$nodes Alive with $NODE_CORES cores each at" \
    "$(node_addr 1)..$(node_addr "$nodes"), server at $BRIDGE_ADDR (logs in $DIR, /var/log/oar.log)"
}

stop() {
  if running "$SERVER_PID"; then
    local ids
    ids=$(oarstat -J 2>/dev/null | grep -oE '^  "[0-9]+"' | tr -d ' "' || true)
    # shellcheck disable=SC2086
    [[ -z $ids ]] || oardel $ids >/dev/null 2>&1 || true
  fi
  # Almighty's process group: its forked children (appendice, bipbip, ...) go with it.
  if running "$SERVER_PID"; then
    kill -TERM -- "-$(cat "$SERVER_PID")" 2>/dev/null || true
    stop_daemon "$SERVER_PID"
  fi
  rm -f "$SERVER_PID"
  remove_network
  if pg_up 2>/dev/null; then
    oar-database --drop --db-is-local -y >/dev/null 2>&1 || true
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
  fi
  echo "oar-cluster: stopped"
}

status() {
  [[ -s $NODES_FILE ]] || return 1
  nodes=$(cat "$NODES_FILE")
  running "$SERVER_PID" && alive
}

USAGE="usage: $0 start [--nodes N] | stop | status"
nodes=3
case ${1:-} in
  start)
    shift
    while (($#)); do
      case $1 in
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
