"""Hydra callback that runs in the driver before any job: validate every grid point, create the store.

Hydra's `on_multirun_start` runs once in the launching process (also with the SLURM launcher, where
jobs run elsewhere), so this is where a bad grid point stops the whole sweep before anything is
submitted, and where the sqlite store and experiment are created once (parallel first-time creation
races).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # pinned hydra-core<1.4
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments import tracking
from experiments.config import ConfigError, plan


def grid_overrides(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> list[list[str]]:
    """The override list of every job of the grid, built exactly as the basic sweeper builds it
    (cartesian product; a command-line value replaces the sweep file's for the same key)."""
    args = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    args += [o for o in task_overrides if not o.startswith("hydra.")]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]


def validate_grid(config_name: str, sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> int:
    """Compose and validate every grid point; returns the number of jobs. Raises SystemExit(2) listing
    every invalid point, before any job starts."""
    errors = []
    grid = grid_overrides(sweeper_params, task_overrides)
    for overrides in grid:
        try:
            plan(compose(config_name=config_name, overrides=overrides))
        except ConfigError as err:
            errors.append(f"  {' '.join(overrides)}\n    -> {err}")
        except Exception as err:  # e.g. an unknown config group option
            errors.append(f"  {' '.join(overrides)}\n    -> {type(err).__name__}: {err}")
    if errors:
        print(f"config error: {len(errors)} of {len(grid)} grid points are invalid; nothing was launched:\n"
              + "\n".join(errors), file=sys.stderr)
        raise SystemExit(2)
    return len(grid)


def prepare_tracking(config: DictConfig) -> None:
    if config.tracking.enabled:
        root = Path(config.paths.root).resolve()
        uri = config.tracking.uri or tracking.default_uri(root)
        tracking.ensure_experiment(uri, config.tracking.experiment, root / "mlartifacts")


class PrepareSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        n = validate_grid(config.hydra.job.config_name, config.hydra.sweeper.get("params"),
                          list(config.hydra.overrides.task))
        prepare_tracking(config)
        print(f"[sweep {config.sweep_id}] {n} grid points validated; launching", file=sys.stderr)
