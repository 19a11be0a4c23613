# Sourced by start.sh and stop.sh: is a daemon of the private SLURM running, by its pid file.
# Running means not a zombie: a daemon that has ended may wait a while for its parent to reap it.
running() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
alive() { [ -f "$1" ] && running "$(cat "$1")"; }
