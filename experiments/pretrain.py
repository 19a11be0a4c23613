"""Pre-train one looped LM: `python -m experiments.pretrain [overrides]`, or a grid with `sweep=<name>`.

One job = validate → resolve the run's identity → skip if finished → resume or start its MLflow run →
train → final evaluation at T = µ_rec and at the test-time loop counts → mark finished
(experiments.training.pretrain). A grid is prepared by experiments.launch.sweep before any job starts.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.config.errors import RunBusyError, one_line, one_line_errors
from experiments.config.schema import register
from experiments.config.cli_help import app_help, wants_help
from experiments.launch.preflight import preflight
from experiments.training.pretrain import run

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    with one_line_errors():
        try:
            return run(cfg)
        except RunBusyError as err:
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                raise
            # In a sweep, a point that another process is training is left to it: the others go on.
            print(one_line("run busy", err), file=sys.stderr, flush=True)
            return float("nan")


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):  # resolved defaults and the groups to choose (Hydra's help shows neither)
        app_help("config", "python -m experiments.pretrain [group=option] [key=value ...] [-m]", __doc__, sys.argv[1:])
        sys.exit(0)
    sys.argv[1:] = preflight("config", sys.argv[1:])  # one line and exit 2 before Hydra writes anything
    main()
