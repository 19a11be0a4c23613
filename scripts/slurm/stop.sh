#!/usr/bin/env bash
# Stop the private SLURM started by scripts/slurm/start.sh: cancel its jobs (so that no job step
# outlives slurmd), then stop slurmd, slurmctld and its own munged by the pids in their files — never
# by process name, which would also hit a system SLURM or munge.
set -uo pipefail
DIR="${1:-.cache/slurm}"
. "$(dirname "$0")/pids.sh"
if alive "$DIR/slurmctld.pid"; then
  export SLURM_CONF="$DIR/slurm.conf"
  jobs="$(squeue -h -o %i 2>/dev/null || true)"
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one id per word
    scancel $jobs 2>/dev/null
    for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for daemon in slurmd slurmctld munged; do
  pidfile="$DIR/$daemon.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if running "$pid"; then
    kill "$pid"
    for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
    running "$pid" && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
echo "[slurm] stopped ($DIR)" >&2
