#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the tests that submit cells through submitit.
# Runs munged, a private MariaDB + slurmdbd (so `sacct` works: submitit watches job states with sacct),
# slurmctld and slurmd as plain daemons (no systemd needed). Needs root and Debian/Ubuntu apt for the first install.
#   scripts/slurm-local.sh start    install what is missing, write the config, start the daemons, wait until idle
#   scripts/slurm-local.sh stop     cancel jobs, stop the daemons, remove the config and all state
#   scripts/slurm-local.sh status   exit 0 when the cluster is up and the node takes jobs, 1 otherwise
# Both start and stop are idempotent. Settings (environment): SLURM_LOCAL_STATE (state root, default
# /var/spool/slurm-local), SLURM_LOCAL_TIMEOUT (seconds start waits for the node, default 60).
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/spool/slurm-local}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
PARTITION=debug
CLUSTER=local
DB_PORT=6829
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MUNGE_KEY=/etc/munge/munge.key
MARKER="# Written by scripts/slurm-local.sh (one-node test cluster); 'slurm-local.sh stop' removes it."
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: $*" >&2; exit 1; }

# A live process, not a zombie (whatever adopts a dead daemon may be slow to reap it).
pid_running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}
pid_alive() { [ -s "$1" ] && pid_running "$(cat "$1")"; }

install_missing_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]} with apt-get"
  local log=/tmp/slurm-local-apt.log
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get failed (full output: $log)"; }
}

ensure_munge_key() {
  if [ ! -s "$MUNGE_KEY" ]; then
    mungekey --create --keyfile="$MUNGE_KEY"
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 400 "$MUNGE_KEY"
}

# Refuse to overwrite a Slurm config that this script did not write (a real cluster's).
write_config() {
  local path=$1 mode=$2 text=$3
  if [ -e "$path" ] && ! head -n 1 "$path" | grep -qxF "$MARKER"; then
    die "$path exists and was not written by this script; refusing to overwrite it"
  fi
  if [ -e "$path" ] && [ "$(cat "$path")" = "$text" ]; then
    return 1
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$text" >"$path"
  chmod "$mode" "$path"
}

# Node line from slurmd's own hardware probe, so the definition always matches (a mismatch drains the node);
# RealMemory keeps a 5% margin for the OS.
node_line() {
  local host=$1 probe mem
  probe=$(slurmd -C | head -n 1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
  [ -n "$mem" ] || die "cannot read this machine's memory from 'slurmd -C': $probe"
  sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" -e "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" \
    <<<"$probe"
}

slurm_conf_text() {
  local host=$1 node=$2
  cat <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job (submitit's checkpoint/requeue) waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=20
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
# Frequent passes (default 60 s / 30 s), so a job whose begin time passes starts within seconds.
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
EnforcePartLimits=ALL
KillWait=10
ReturnToService=2
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf_text() {
  cat <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/db/password")
StorageLoc=slurm_acct_db
EOF
}

wait_for() {
  local what=$1 seconds=$2
  shift 2
  local end=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
  say "$what is up"
}

munge_works() { { munge -n </dev/null | unmunge; } >/dev/null 2>&1; }

start_munge() {
  munge_works && return 0
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --force
  wait_for munged 10 munge_works || die "munged did not start (see /var/log/munge/munged.log)"
}

db_ping() { mariadb-admin --socket="$STATE/db/mysqld.sock" ping; }

start_database() {
  local db=$STATE/db
  if [ ! -d "$db/data/mysql" ]; then
    install -d -o mysql -g mysql -m 700 "$db" "$db/data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$db/data" --auth-root-authentication-method=socket \
      --skip-test-db --innodb-log-file-size=64M >"$STATE/log/mariadb-install.txt" 2>&1 ||
      die "mariadb-install-db failed (see $STATE/log/mariadb-install.txt)"
  fi
  if ! db_ping >/dev/null 2>&1; then
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$db/data" --socket="$db/mysqld.sock" \
      --pid-file="$db/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$STATE/log/mariadb.log" \
      --innodb-log-file-size=64M --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    wait_for mariadb 30 db_ping || die "mariadbd did not start (see $STATE/log/mariadb.log)"
  fi
  if [ ! -s "$db/password" ]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$db/password")
  fi
  mariadb --socket="$db/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$db/password")';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

# Start one Slurm daemon unless its pid file names a live process.
start_daemon() {
  local name=$1
  pid_alive "$STATE/run/$name.pid" && return 0
  "/usr/sbin/$name" || die "$name failed to start (see $STATE/log/$name.log)"
}

ctld_up() { scontrol ping | grep -q 'is UP'; }
cluster_registered() { sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; }
node_takes_jobs() { sinfo -h -p "$PARTITION" -o %t | grep -qE '^(idle|mix|alloc)$'; }

# Daemons running from an older config must restart to pick up the new one.
stop_slurm_daemons() { stop_pid_files "$STATE"/run/{slurmd,slurmctld,slurmdbd}.pid; }

any_running() {
  local pid
  for pid in "$@"; do
    pid_running "$pid" && return 0
  done
  return 1
}

# SIGTERM every live process named by the pid files, wait up to 10 s for all of them, then SIGKILL the rest.
stop_pid_files() {
  local file pids=()
  for file in "$@"; do
    pid_alive "$file" && pids+=("$(cat "$file")")
    rm -f "$file"
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    any_running "${pids[@]}" || return 0
    sleep 0.2
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

show_logs() {
  local log
  for log in "$STATE"/log/*.log; do
    [ -e "$log" ] || continue
    echo "--- $log (last lines)" >&2
    tail -n 15 "$log" >&2
  done
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts system daemons)"
  local host node changed=0 text
  install_missing_packages
  ensure_munge_key
  host=$(hostname -s)
  node=$(node_line "$host")
  # State left by daemons that died without 'stop' (a killed session): start from scratch, so job ids and the
  # accounting database stay consistent.
  if [ -d "$STATE" ] && ! pid_alive "$STATE/run/slurmctld.pid"; then
    say "clearing state left by an earlier run"
    remove_cluster
  fi
  mkdir -p "$STATE/log" "$STATE/run" "$STATE/slurmctld" "$STATE/slurmd"
  start_munge
  start_database
  text=$(slurmdbd_conf_text)
  write_config "$DBD_CONF" 600 "$text" && changed=1
  text=$(slurm_conf_text "$host" "$node")
  write_config "$CONF" 644 "$text" && changed=1
  [ "$changed" = 1 ] && stop_slurm_daemons
  start_daemon slurmdbd
  # slurmctld exits ("no TRES from the database") when slurmdbd does not answer yet.
  wait_for slurmdbd 30 sacctmgr -n list cluster || { show_logs; die "slurmdbd did not answer within 30s"; }
  start_daemon slurmctld
  # slurmd started before slurmctld listens backs off for seconds before it registers again.
  wait_for slurmctld 30 ctld_up || { show_logs; die "slurmctld did not answer within 30s"; }
  start_daemon slurmd
  if ! wait_for "node $host in partition $PARTITION" "$TIMEOUT" node_takes_jobs ||
    ! wait_for accounting 30 cluster_registered; then
    show_logs
    sinfo -N -l >&2 || true
    die "cluster did not come up within ${TIMEOUT}s (logs above)"
  fi
  say "ready: partition=$PARTITION node=$host cpus=$(sinfo -h -o %c -p "$PARTITION") mem_mb=$(sinfo -h -o %m -p "$PARTITION")"
}

cancel_all_jobs() {
  scancel --full --user=root >/dev/null 2>&1 || return 0
  for _ in $(seq 50); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && return 0
    sleep 0.2
  done
}

remove_our_config() {
  local path
  for path in "$CONF" "$DBD_CONF"; do
    if [ -e "$path" ] && head -n 1 "$path" | grep -qxF "$MARKER"; then
      rm -f "$path"
    fi
  done
}

remove_cluster() {
  if [ -d "$STATE" ]; then
    pid_alive "$STATE/run/slurmctld.pid" && cancel_all_jobs
    stop_pid_files "$STATE"/run/{slurmd,slurmctld,slurmdbd}.pid "$STATE/db/mysqld.pid" /run/munge/munged.pid
    rm -rf "$STATE"
  else
    stop_pid_files /run/munge/munged.pid
  fi
  remove_our_config
}

stop() {
  [ "$(id -u)" = 0 ] || die "needs root"
  remove_cluster
  say "stopped"
}

status() {
  local name up=0
  for name in slurmdbd slurmctld slurmd; do
    if pid_alive "$STATE/run/$name.pid"; then echo "$name: running"; else echo "$name: stopped"; up=1; fi
  done
  if munge_works; then echo "munged: running"; else echo "munged: stopped"; up=1; fi
  if db_ping >/dev/null 2>&1; then echo "mariadbd: running"; else echo "mariadbd: stopped"; up=1; fi
  if [ "$up" = 0 ] && node_takes_jobs; then
    sinfo
    return 0
  fi
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
