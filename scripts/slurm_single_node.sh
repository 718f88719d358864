#!/usr/bin/env bash
# Bring up a REAL single-node Slurm (Debian 12 slurm-wlm 22.05) on this machine, for CI and tests.
# Runs as root on a fresh Debian 12 box without systemd: every daemon is started by hand and
# tracked by its pid file (never by process name).
#
#   bash scripts/slurm_single_node.sh up       # install + start (idempotent; default)
#   bash scripts/slurm_single_node.sh status   # daemons and sinfo
#   bash scripts/slurm_single_node.sh down     # stop every daemon this script starts
#   bash scripts/slurm_single_node.sh reset    # down + forget all jobs (spool and accounting DB)
#
# Environment:
#   SLURM_ACCOUNTING=1  also run mariadb + slurmdbd so `sacct` works (submitit polls sacct for job
#                       state; without it job.state is UNKNOWN and every poll logs a warning). 0: skip.
#   SLURM_SMOKE=1       finish `up` with `srun hostname`.
set -euo pipefail

ACCOUNTING="${SLURM_ACCOUNTING:-1}"
SMOKE="${SLURM_SMOKE:-1}"
NODE="$(hostname -s)"
CLUSTER_NAME=ci
PARTITION=debug
DB_PASSWORD=slurmdb
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOG_DIR=/var/log/slurm
PID_MUNGED=/run/munge/munged.pid
PID_MARIADB=/run/mysqld/mysqld.pid
PID_DBD=/run/slurmdbd.pid
PID_CTLD=/run/slurmctld.pid
PID_SLURMD=/run/slurmd.pid

say() { echo "[slurm_single_node] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# A daemon is alive when its pid file names a live, non-zombie process. (Daemonizing in gVisor
# leaves "<defunct>" zombies behind, so process-name matching would lie.)
pid_alive() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

# poll <seconds> <command...>: run the command every 0.2 s until it succeeds or time runs out.
poll() {
  local tries=$(( $1 * 5 )); shift
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

stop_by_pidfile() {
  local pidfile=$1 name=$2 pid
  if pid_alive "$pidfile"; then
    pid="$(cat "$pidfile")"
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.2; done
    if pid_alive "$pidfile"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

mariadb_up() { [ -x /usr/bin/mariadb-admin ] && mariadb-admin ping >/dev/null 2>&1; }

cmd_down() {
  stop_by_pidfile "$PID_SLURMD" slurmd
  stop_by_pidfile "$PID_CTLD" slurmctld
  stop_by_pidfile "$PID_DBD" slurmdbd
  if mariadb_up; then say "stopping mariadb"; mariadb-admin shutdown || true; fi
  stop_by_pidfile "$PID_MUNGED" munged
  say "down"
}

cmd_status() {
  local pidfile
  for pidfile in "$PID_MUNGED" "$PID_MARIADB" "$PID_DBD" "$PID_CTLD" "$PID_SLURMD"; do
    if pid_alive "$pidfile"; then echo "UP   $pidfile ($(cat "$pidfile"))"; else echo "DOWN $pidfile"; fi
  done
  sinfo 2>&1 || true
}

# Forget every job. Both the spool and the accounting DB must go: with only the spool wiped, job
# ids restart at 1 while sacct still answers with old records of the same ids.
cmd_reset() {
  if mariadb_up; then mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db" || true; fi
  cmd_down
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
  say "reset (the next 'up' starts at job id 1)"
}

install_packages() {
  local wanted=(munge slurmctld slurmd slurm-client) missing=() pkg
  [ "$ACCOUNTING" = 1 ] && wanted+=(slurmdbd mariadb-server)
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null
  # The postinst scripts try invoke-rc.d and are refused (no init system): harmless.
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
}

start_munge() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then   # the Debian postinst normally writes one
    say "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  if ! pid_alive "$PID_MUNGED"; then
    say "starting munged"
    rm -f "$PID_MUNGED" /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged
  fi
  poll 15 bash -c 'munge -n | unmunge' || die "munge does not answer"
}

# Print slurm.conf for this machine. Memory is declared at 90% of what slurmd sees (more than the
# real amount drains the node). DefMemPerCPU matters: without it a job with no --mem gets the
# whole node's memory under CR_Core_Memory, so two 1-CPU jobs could never run side by side.
render_slurm_conf() {
  local cpus mem_mb accounting_lines
  cpus="$(nproc)"
  mem_mb="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  mem_mb=$(( mem_mb * 90 / 100 ))
  if [ "$ACCOUNTING" = 1 ]; then
    accounting_lines=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819'
  else
    accounting_lines='AccountingStorageType=accounting_storage/none'
  fi
  cat <<EOF
# written by miles_hydra scripts/slurm_single_node.sh
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120): keep the
# preemption tests short. Still ample for a step launch on one node.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
# no cgroups in this sandbox: linuxproc tracking and task/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting_lines
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# look at pending jobs every 2 s (defaults: 60 s main loop, 30 s backfill): a requeued job
# becomes eligible on a timer, not on an event, and would otherwise idle up to a minute
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( mem_mb / cpus ))
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$PID_CTLD
SlurmdPidFile=$PID_SLURMD
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# Write slurm.conf when it changed; prints 1 if it did (the daemons must then restart), else 0.
write_slurm_conf() {
  local wanted
  install -d -m 0755 /etc/slurm "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  wanted="$(render_slurm_conf)"
  if [ -f "$SLURM_CONF" ] && [ "$(cat "$SLURM_CONF")" = "$wanted" ]; then echo 0; return; fi
  printf '%s\n' "$wanted" > "$SLURM_CONF"
  say "wrote $SLURM_CONF"
  echo 1
}

start_accounting() {
  install -d -o mysql -g root -m 0755 /run/mysqld
  if ! mariadb_up; then
    say "starting mariadb"
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file="$PID_MARIADB" \
      >"$LOG_DIR/mariadb.log" 2>&1 </dev/null &
    poll 60 mariadb-admin ping || { tail -20 "$LOG_DIR/mariadb.log"; die "mariadb did not start"; }
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > "$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$PID_DBD
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DBD_CONF"   # slurmdbd refuses a conf other users can read
  if ! pid_alive "$PID_DBD"; then say "starting slurmdbd"; /usr/sbin/slurmdbd; fi
  poll 60 sacctmgr -n list cluster || { tail -20 "$LOG_DIR/slurmdbd.log"; die "slurmdbd does not answer"; }
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME"; then
    sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
  fi
}

node_usable() { sinfo -h -n "$NODE" -o %t | grep -qE '^(idle|mix|alloc)$'; }

start_slurm() {
  local conf_changed=$1
  if [ "$conf_changed" = 1 ]; then   # restart so both daemons read the new conf
    stop_by_pidfile "$PID_SLURMD" slurmd
    stop_by_pidfile "$PID_CTLD" slurmctld
  fi
  if ! pid_alive "$PID_CTLD"; then say "starting slurmctld"; /usr/sbin/slurmctld; fi
  poll 30 scontrol ping || { tail -20 "$LOG_DIR/slurmctld.log"; die "slurmctld does not answer"; }
  if ! pid_alive "$PID_SLURMD"; then say "starting slurmd"; /usr/sbin/slurmd; fi
  if ! poll 30 node_usable; then
    # e.g. DOWN or DRAIN left over from an unclean stop
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    poll 30 node_usable || { sinfo; tail -20 "$LOG_DIR/slurmd.log"; die "node $NODE not usable"; }
  fi
}

cmd_up() {
  local started conf_changed out
  started="$(date +%s.%N)"
  install_packages
  # slurmctld and slurmd must resolve their own short host name
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
  start_munge
  conf_changed="$(write_slurm_conf)"
  [ "$ACCOUNTING" = 1 ] && start_accounting
  start_slurm "$conf_changed"
  if [ "$SMOKE" = 1 ]; then
    out="$(timeout 60 srun -N1 -n1 -t 1 hostname)"
    [ "$out" = "$(hostname)" ] || die "srun smoke test printed '$out'"
  fi
  sinfo
  say "up in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
}

# Sourced (scripts/slurm_two_node.sh reuses munge, accounting and the helpers): define only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-up}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    *) echo "usage: $0 [up|status|down|reset]" >&2; exit 2 ;;
  esac
fi
