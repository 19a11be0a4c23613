#!/usr/bin/env bash
# Start a private single-node SLURM (Debian's slurmctld + slurmd + munge) for tests and laptops.
#
#   scripts/slurm/start.sh [DIR]        # default DIR: .cache/slurm
#   export SLURM_CONF=DIR/slurm.conf    # every client (sbatch, squeue, submitit) needs it
#   scripts/slurm/stop.sh [DIR]
#
# Its own config, state, logs, pid files and munge daemon (key, socket) live in DIR; the ports are not
# SLURM's defaults and the munge socket is not the system's, so a system SLURM or munge on the same
# machine is never touched, and stop.sh stops every daemon this script started. Needs root: to install
# the packages (or sudo) and to run the daemons. Idempotent: a cluster already running from DIR is reused.
set -euo pipefail

DIR="$(mkdir -p "${1:-.cache/slurm}" && cd "${1:-.cache/slurm}" && pwd)"
CTLD_PORT="${SLURM_TEST_CTLD_PORT:-7817}"
SLURMD_PORT="${SLURM_TEST_SLURMD_PORT:-7818}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  echo "[slurm] installing slurmctld slurmd slurm-client munge (Debian packages)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && \
         $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
fi

MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
export SLURM_CONF="$DIR/slurm.conf"
. "$(dirname "$0")/pids.sh"
munge_ok() { munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
if alive "$DIR/munged.pid" && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
  echo "[slurm] already running from $DIR" >&2
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
# Half a cluster (one daemon died): stop what is left by its pid, then start all three afresh.
"$(dirname "$0")/stop.sh" "$DIR" 2>/dev/null

# munge: a private daemon (own key, socket, pid file) that stop.sh ends by its pid; the system's
# /run/munge socket, if any, is left alone. The key and socket directories must not be group- or
# world-writable (munged checks).
mkdir -p "$MUNGE_DIR"
chmod 700 "$MUNGE_DIR"
[ -f "$MUNGE_DIR/munge.key" ] || /usr/sbin/mungekey --create --keyfile="$MUNGE_DIR/munge.key"
/usr/sbin/munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$DIR/munged.pid" \
  --log-file="$DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
munge_ok || { echo "[slurm] munged did not start; see $DIR/munged.log" >&2; exit 1; }

HOST="$(hostname -s)"
# At least 4 CPUs, whatever the machine has: a 2-rank job (one CPU per task) and a 1-rank job fit side
# by side on a 2-core laptop; the processes then share the cores (config_overrides below).
CPUS="$(nproc)"
[ "$CPUS" -ge 4 ] || CPUS=4
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))"
mkdir -p "$DIR/state" "$DIR/spool"
cat > "$SLURM_CONF" <<EOF
ClusterName=parcaetest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# Our own munged's socket; a requeued job may start again 10 s after it ended instead of 120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups, no accounting database: nothing beyond the two daemons is needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# A requeued job waits for its begin time (cred_expire above), then for a pass of the scheduler: every
# 2 s here instead of 60 (backfill's 30), so that it starts again ~13 s after it was requeued, not ~60.
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# The node's CPUs are taken from this file, not from the hardware (see CPUS above).
SlurmdParameters=config_overrides
# Seconds between SIGTERM and SIGKILL when a job is stopped (requeue, cancel): jobs checkpoint on
# SIGTERM at the end of the current step, which takes well under this on the test cluster.
KillWait=10
# The node is named after the host, as on a real cluster: a multi-task job's first node name
# (SLURM_JOB_NODELIST) is the address its ranks meet at (MASTER_ADDR, experiments.config.launch_env).
NodeName=$HOST NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

/usr/sbin/slurmctld -i -f "$SLURM_CONF"
/usr/sbin/slurmd -N "$HOST" -f "$SLURM_CONF"
for _ in $(seq 100); do
  state="$(sinfo -h -o %T 2>/dev/null || true)"
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 0.2
done
case "$(sinfo -h -o %T 2>/dev/null || true)" in
  idle*|mix*|alloc*) ;;
  *) echo "[slurm] node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2; exit 1 ;;
esac
echo "[slurm] single-node cluster up: $CPUS CPUs, ${MEM_MB} MB, ports $CTLD_PORT/$SLURMD_PORT, dir $DIR" >&2
echo "export SLURM_CONF=$SLURM_CONF"
