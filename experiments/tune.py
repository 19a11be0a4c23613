"""Hyperparameter search with Optuna: `python -m experiments.tune [overrides] tune=lr tune.n_trials=8 tune.workers=2`
(experiments.launch.tune: spawned workers and submitit pickle its `worker` by reference)."""

import sys

from experiments.config.errors import one_line_errors
from experiments.launch.tune import main

if __name__ == "__main__":
    with one_line_errors():
        sys.exit(main())
