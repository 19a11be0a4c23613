#!/usr/bin/env bash
# Stop the private SLURM started by scripts/slurm/start.sh, by the pids in its own files — never by
# process name, which would also hit a system SLURM. munged is left alone (it is shared).
set -uo pipefail
DIR="${1:-.cache/slurm}"
for daemon in slurmd slurmctld; do
  pidfile="$DIR/$daemon.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
echo "[slurm] stopped ($DIR)" >&2
