"""Fine-tune a pre-trained model with FLOW or a baseline and measure forgetting:
`python -m experiments.finetune [overrides]`, or a method × τ grid with `finetune/sweep=flow`
(one job: experiments.training.finetune; the grid's driver callback: experiments.launch.finetune_sweep).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from experiments.config.errors import one_line_errors
from experiments.config.cli_help import app_help, wants_help
from experiments.launch.preflight import preflight
from experiments.training.finetune import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> float:
    with one_line_errors():
        return run(cfg)["combined"]


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):  # resolved defaults and the groups to choose (Hydra's help shows neither)
        app_help("finetune", "python -m experiments.finetune [group=option] [key=value ...] [-m]", __doc__, sys.argv[1:])
        sys.exit(0)
    preflight("finetune", sys.argv[1:], check_plan=False)  # unknown keys, wrong types: before Hydra writes
    main()
