#!/usr/bin/env bash
# Bring up a REAL two-node Slurm on this one machine: each slurmd runs in its own network + UTS +
# mount namespace (own hostname, own address on a private bridge), one slurmctld in the root
# namespace, munge and slurmdbd shared with scripts/slurm_single_node.sh (whose functions this
# script sources). It runs beside the single-node cluster: its own slurm.conf, ports, spool,
# logs and pid files, its own ClusterName in the shared accounting database.
#
#   bash scripts/slurm_two_node.sh up       # install + start (idempotent; default)
#   bash scripts/slurm_two_node.sh status   # daemons, namespaces and sinfo
#   bash scripts/slurm_two_node.sh down     # stop its daemons, remove its namespaces and bridge
#
# Clients reach it through SLURM_CONF (the single-node cluster stays the default):
#   export SLURM_CONF=/etc/slurm-2n/slurm.conf
#   sinfo; python launch.py cluster=slurm cluster.nodes=2 cluster.cpus_per_task=1 ...
#
# Every node has its own /tmp, as real nodes do (Ray's per-node temp dirs live there; a job's
# cleanup of dead Ray dirs then never sees another cluster's): put output_root on the shared
# file system, anywhere but /tmp. Everything else is one file system.
#
# Only the bridge and the namespaces created here carry the private addresses; nothing else on
# the network is touched. Host names resolve through /etc/netns/<ns>/hosts (bound over /etc/hosts
# inside the node's mount namespace) and NodeAddr= in slurm.conf: /etc/hosts is not edited.
#
# Environment:
#   SLURM2N_SUBNET=10.213.0  first three octets of the private /24 (the host is .1, nodes .10+)
#   SLURM_ACCOUNTING=1       use slurmdbd (shared with the single-node cluster) for sacct; 0: skip
#   SLURM_SMOKE=1            finish `up` with `srun -N2 hostname`
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/slurm_single_node.sh
source "$HERE/slurm_single_node.sh"   # defines only; sets ACCOUNTING, SMOKE, pid_alive, poll, ...

NUM_NODES=2
NODE_PREFIX=mhnode                   # node names mhnode0, mhnode1 (also their hostnames)
SUBNET="${SLURM2N_SUBNET:-10.213.0}"
HOST_IP="$SUBNET.1"                  # the bridge's address: where slurmctld is reached
BRIDGE=mh2nbr0
CTLD_HOST="$(hostname -s)"           # slurmctld checks that it runs on SlurmctldHost
CLUSTER_NAME=ci2n                    # read by start_accounting (sourced)
PARTITION=two
CONF_DIR=/etc/slurm-2n
export SLURM_CONF="$CONF_DIR/slurm.conf"   # every Slurm command below talks to this cluster
SHARED_LOG_DIR="$LOG_DIR"            # mariadb's and slurmdbd's (shared), from the sourced script
LOG_DIR=/var/log/slurm-2n
SPOOL=/var/spool/slurm-2n
RUN_DIR=/run/slurm-2n
PID_CTLD="$RUN_DIR/slurmctld.pid"
CTLD_PORT=6827                       # the single-node cluster uses 6817/6818
SLURMD_PORT=6828
FIRST_JOB_ID=2000000

say() { echo "[slurm_two_node] $*" >&2; }

node_name() { echo "$NODE_PREFIX$1"; }
node_ip() { echo "$SUBNET.$((10 + $1))"; }
netns_of() { echo "mh2n-$(node_name "$1")"; }
veth_of() { echo "mh2nv$1"; }
slurmd_pidfile() { echo "$RUN_DIR/slurmd-$(node_name "$1").pid"; }
node_tmp() { echo "$SPOOL/$(node_name "$1")/tmp"; }   # the node's /tmp

# --- network: a bridge in the root namespace, one namespace per node --------------------------

netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

setup_network() {
  local i ns veth
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    say "creating bridge $BRIDGE ($HOST_IP/24)"
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for i in $(seq 0 $((NUM_NODES - 1))); do
    ns="$(netns_of "$i")"
    veth="$(veth_of "$i")"
    netns_exists "$ns" || { say "creating namespace $ns ($(node_ip "$i"))"; ip netns add "$ns"; }
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip -n "$ns" link del eth0 >/dev/null 2>&1 || true
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr replace "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    # bind-mounted over /etc/hosts in the node's mount namespace (`ip netns exec` does the same)
    install -d -m 0755 "/etc/netns/$ns"
    render_hosts > "/etc/netns/$ns/hosts"
  done
}

render_hosts() {
  local i
  echo "127.0.0.1 localhost"
  echo "$HOST_IP $CTLD_HOST"
  for i in $(seq 0 $((NUM_NODES - 1))); do echo "$(node_ip "$i") $(node_name "$i")"; done
}

teardown_network() {
  local i ns pid
  for i in $(seq 0 $((NUM_NODES - 1))); do
    ns="$(netns_of "$i")"
    if netns_exists "$ns"; then
      # leftovers of jobs (e.g. Ray) started inside this node: only processes of our namespace
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      say "removing namespace $ns"
      ip netns del "$ns"
    fi
    ip link del "$(veth_of "$i")" >/dev/null 2>&1 || true
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true   # only if nothing else uses it
  if ip link show "$BRIDGE" >/dev/null 2>&1; then say "removing bridge $BRIDGE"; ip link del "$BRIDGE"; fi
}

# --- slurm.conf --------------------------------------------------------------------------------

# Every node gets the CPUs its slurmd sees (all cores: two 1-CPU jobs then fit on the same nodes
# at once) and an equal share of 90% of the memory. Jobs and Ray nodes ask for 1 CPU each.
render_conf() {
  local cpus mem_mb accounting_lines i nodes
  cpus="$(nproc)"
  mem_mb="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  mem_mb=$(( mem_mb * 90 / 100 / NUM_NODES ))
  if [ "$ACCOUNTING" = 1 ]; then
    accounting_lines=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819'
  else
    accounting_lines='AccountingStorageType=accounting_storage/none'
  fi
  nodes="$(node_name 0)"
  for i in $(seq 1 $((NUM_NODES - 1))); do nodes="$nodes,$(node_name "$i")"; done
  cat <<EOF
# written by miles_hydra scripts/slurm_two_node.sh
ClusterName=$CLUSTER_NAME
SlurmctldHost=$CTLD_HOST($HOST_IP)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting_lines
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( mem_mb / cpus ))
ReturnToService=2
# job ids never collide with the single-node cluster's: both put /tmp/mh_ray_<job id>_* on the
# same file system, and a job's cleanup removes the dirs of ids its own queue does not know
FirstJobId=$FIRST_JOB_ID
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$PID_CTLD
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmctldTimeout=30
# a node whose slurmd vanished is marked DOWN after this long (its jobs end NODE_FAIL)
SlurmdTimeout=15
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
EOF
  for i in $(seq 0 $((NUM_NODES - 1))); do
    echo "NodeName=$(node_name "$i") NodeAddr=$(node_ip "$i") NodeHostname=$(node_name "$i") CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
  done
  echo "PartitionName=$PARTITION Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
}

write_conf() {   # prints 1 when slurm.conf changed (the daemons must restart), else 0
  local wanted
  install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$SPOOL/slurmctld" "$RUN_DIR"
  wanted="$(render_conf)"
  if [ -f "$SLURM_CONF" ] && [ "$(cat "$SLURM_CONF")" = "$wanted" ]; then echo 0; return; fi
  printf '%s\n' "$wanted" > "$SLURM_CONF"
  say "wrote $SLURM_CONF"
  echo 1
}

# --- daemons -----------------------------------------------------------------------------------

nodes_usable() {
  [ "$(sinfo -h -p "$PARTITION" -o '%D %t' | awk '$2 ~ /^(idle|mix|alloc)$/ {n += $1} END {print n + 0}')" = "$NUM_NODES" ]
}

start_slurmd() {
  local i=$1 node ns
  node="$(node_name "$i")"
  ns="$(netns_of "$i")"
  install -d -m 0755 "$SPOOL/$node"
  install -d -m 1777 "$(node_tmp "$i")"
  say "starting slurmd $node in namespace $ns"
  # Enter the node's network namespace, then new UTS (the node's hostname) and mount namespaces
  # (its /etc/hosts and its own /tmp); slurmd daemonizes inside them, and every job step it
  # starts inherits them. (`ip netns exec` would also remount /sys and hide the cgroup mounts
  # slurmd needs.)
  nsenter --net="/run/netns/$ns" -- unshare --uts --mount -- /bin/sh -c \
    "mount --bind '/etc/netns/$ns/hosts' /etc/hosts && mount --bind '$(node_tmp "$i")' /tmp &&
     hostname '$node' && exec /usr/sbin/slurmd -f '$SLURM_CONF' -N '$node'"
}

start_daemons() {
  local conf_changed=$1 i
  if [ "$conf_changed" = 1 ]; then
    for i in $(seq 0 $((NUM_NODES - 1))); do stop_by_pidfile "$(slurmd_pidfile "$i")" "slurmd $(node_name "$i")"; done
    stop_by_pidfile "$PID_CTLD" "slurmctld ($CLUSTER_NAME)"
  fi
  if ! pid_alive "$PID_CTLD"; then say "starting slurmctld ($CLUSTER_NAME, port $CTLD_PORT)"; /usr/sbin/slurmctld -f "$SLURM_CONF"; fi
  poll 30 scontrol ping || { tail -20 "$LOG_DIR/slurmctld.log"; die "slurmctld does not answer"; }
  for i in $(seq 0 $((NUM_NODES - 1))); do
    pid_alive "$(slurmd_pidfile "$i")" || start_slurmd "$i"
  done
  if ! poll 30 nodes_usable; then   # e.g. DOWN left over from an unclean stop
    for i in $(seq 0 $((NUM_NODES - 1))); do
      scontrol update NodeName="$(node_name "$i")" State=RESUME >/dev/null 2>&1 || true
    done
    poll 30 nodes_usable || { sinfo; tail -20 "$LOG_DIR"/slurmd-*.log; die "nodes not usable"; }
  fi
}

cmd_up() {
  local started conf_changed out want
  started="$(date +%s.%N)"
  install_packages
  if ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
    say "apt-get install iproute2 util-linux"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 iproute2 util-linux >/dev/null
  fi
  start_munge
  setup_network
  conf_changed="$(write_conf)"
  # shared mariadb + slurmdbd (their conf unchanged); also registers cluster $CLUSTER_NAME
  if [ "$ACCOUNTING" = 1 ]; then LOG_DIR="$SHARED_LOG_DIR" start_accounting; fi
  start_daemons "$conf_changed"
  if [ "$SMOKE" = 1 ]; then
    out="$(timeout 60 srun -N"$NUM_NODES" --ntasks-per-node=1 -t 1 hostname | sort | tr '\n' ' ')"
    want="$(for i in $(seq 0 $((NUM_NODES - 1))); do node_name "$i"; done | sort | tr '\n' ' ')"
    [ "$out" = "$want" ] || die "srun smoke test printed '$out' (want '$want')"
  fi
  sinfo
  say "up in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (SLURM_CONF=$SLURM_CONF)"
}

cmd_down() {
  local i
  for i in $(seq 0 $((NUM_NODES - 1))); do stop_by_pidfile "$(slurmd_pidfile "$i")" "slurmd $(node_name "$i")"; done
  stop_by_pidfile "$PID_CTLD" "slurmctld ($CLUSTER_NAME)"
  teardown_network
  for i in $(seq 0 $((NUM_NODES - 1))); do rm -rf "$(node_tmp "$i")"; done
  say "down (munge and slurmdbd are shared with the single-node cluster: left running)"
}

cmd_status() {
  local i pidfile
  for pidfile in "$PID_MUNGED" "$PID_DBD" "$PID_CTLD"; do
    if pid_alive "$pidfile"; then echo "UP   $pidfile ($(cat "$pidfile"))"; else echo "DOWN $pidfile"; fi
  done
  for i in $(seq 0 $((NUM_NODES - 1))); do
    pidfile="$(slurmd_pidfile "$i")"
    if pid_alive "$pidfile"; then echo "UP   $pidfile ($(cat "$pidfile"), netns $(netns_of "$i"), $(node_ip "$i"))"; else echo "DOWN $pidfile"; fi
  done
  sinfo 2>&1 || true
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
