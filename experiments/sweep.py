"""Run a sweep and, with `sweep.adaptive=true` (the isoFLOP default), extend µ_rec beyond edge optima:
`python -m experiments.sweep sweep=isoflop [overrides]` (what `make sweep` runs; experiments.launch.adaptive)."""

import sys

from experiments.launch.adaptive import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
