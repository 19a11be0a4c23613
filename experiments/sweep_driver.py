"""Hydra callback that runs in the driver before any job: validate every grid point, create the store.

Hydra's `on_multirun_start` runs once in the launching process (also with the SLURM launcher, where
jobs run elsewhere), so this is where a bad grid point stops the whole sweep before anything is
submitted, and where the sqlite store and experiment are created once (parallel first-time creation
races).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments import tracking
from experiments.config import ConfigError, plan


def grid_overrides(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> list[list[str]]:
    """The override list of every job of the grid, as the basic sweeper builds it (cartesian product,
    command-line values win over the sweep file's)."""
    parser = OverridesParser.create()
    by_key: dict[str, Any] = {}
    for key, value in (sweeper_params or {}).items():
        by_key[key] = parser.parse_override(f"{key}={value}")
    for ov in parser.parse_overrides(list(task_overrides)):
        by_key[ov.get_key_element()] = ov
    axes = []
    for ov in by_key.values():
        key = ov.get_key_element()
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


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

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        prepare_tracking(config)
