# Shell functions of the test-cluster scripts (scripts/slurm-cluster.sh, scripts/oar-cluster.sh),
# sourced by them. The caller sets NAME (its name, in messages) and LOGS (where to look when
# something does not come up).

die() { echo "$NAME: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${seconds} s; see $LOGS"
    sleep 0.1
  done
}

running() {  # running PIDFILE: the process named in PIDFILE is alive
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
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

# add_bridge BRIDGE ADDRESS: a bridge in this namespace at ADDRESS/24, route_localnet on it.
add_bridge() {
  ip link add "$1" type bridge
  ip addr add "$2/24" dev "$1"
  ip link set "$1" up
  sysctl -qw "net.ipv4.conf.$1.route_localnet=1"
}

# add_node NETNS VETH BRIDGE ADDRESS: the network namespace NETNS, reached at ADDRESS/24 over a
# veth pair (VETH on BRIDGE here, eth0 there), route_localnet on both ends (and on `all` inside
# NETNS, which is the node's own setting).
add_node() {
  local netns=$1 veth=$2 bridge=$3 address=$4
  ip netns add "$netns"
  ip link add "$veth" type veth peer name eth0 netns "$netns"
  ip link set "$veth" master "$bridge"
  ip link set "$veth" up
  sysctl -qw "net.ipv4.conf.$veth.route_localnet=1"
  ip netns exec "$netns" sh -e -c "
    sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1
    ip addr add $address/24 dev eth0
    ip link set eth0 up
    ip link set lo up"
}

remove_node() {  # remove_node NETNS VETH: what add_node made, if it is there
  ip netns del "$1" 2>/dev/null || true  # takes its veth pair along
  ip link del "$2" 2>/dev/null || true
}
