"""Run a sweep and, with `sweep.adaptive=true` (the isoFLOP default), extend µ_rec beyond edge optima:
`python -m experiments.sweep sweep=isoflop [overrides]` (what `make sweep` runs; experiments.launch.adaptive)."""

import sys
from pathlib import Path

from experiments.config.cli_help import print_help, wants_help
from experiments.launch import adaptive

if __name__ == "__main__":
    if wants_help(sys.argv[1:]):
        sweeps = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "sweep").glob("*.yaml"))
        print_help("python -m experiments.sweep sweep=<name> [hydra overrides]", adaptive.__doc__,
                   notes=f"sweeps (conf/sweep): {', '.join(sweeps)}\n"
                         "overrides: as python -m experiments.pretrain takes them (see its --help); "
                         "python -m experiments.show_config sweep=<name> lists the grid's points")
        sys.exit(0)
    sys.exit(adaptive.run(sys.argv[1:]))
