#!/usr/bin/env bash
# Start a private single-node SLURM (Debian's slurmctld + slurmd + munge) for tests and laptops.
#
#   scripts/slurm/start.sh [DIR]        # default DIR: .cache/slurm
#   export SLURM_CONF=DIR/slurm.conf    # every client (sbatch, squeue, submitit) needs it
#   scripts/slurm/stop.sh [DIR]
#
# Its own config, state, logs and pid files live in DIR; the ports are not SLURM's defaults, so a
# system SLURM on the same machine is never touched. Needs root (or sudo) to install packages and
# to start munged as the munge user. Idempotent: a cluster already running from DIR is reused.
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

# munge: one daemon per machine, shared with any system SLURM; start it only if none answers.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -f /etc/munge/munge.key ] || $SUDO /usr/sbin/mungekey --create 2>/dev/null || true
  $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
  $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
  $SUDO runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { echo "[slurm] munged did not start" >&2; exit 1; }
fi

export SLURM_CONF="$DIR/slurm.conf"
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
  echo "[slurm] already running from $DIR" >&2
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))"
mkdir -p "$DIR/state" "$DIR/spool"
cat > "$SLURM_CONF" <<EOF
ClusterName=parcaetest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job may start again ~10 s after it ended instead of ~120 s.
AuthInfo=cred_expire=10
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
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is stopped (requeue, cancel): jobs checkpoint on
# SIGTERM at the end of the current step, which takes well under this on the test cluster.
KillWait=10
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=n1 Default=YES MaxTime=INFINITE State=UP
EOF

/usr/sbin/slurmctld -i -f "$SLURM_CONF"
/usr/sbin/slurmd -N n1 -f "$SLURM_CONF"
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
