"""Hydra callback of a fine-tuning sweep (`finetune/sweep=flow`): in the driver, before any job, validate
every grid point (config and base model), create the store and the sweep's parent run, with the
pre-training sweep's machinery (experiments.launch.sweep)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.config.errors import ConfigError
from experiments.config.finetune import validate
from experiments.launch.sweep import (PARENT_OVERRIDE, _hand_to_jobs, grid_overrides, no_launch_on_error,
                                      prepare_tracking, stop_on_invalid_points)
from experiments.tracking import store as tracking
from experiments.training.finetune import finished_base_run


class PrepareFinetuneSweep(Callback):
    """In the driver, before any job: validate every grid point (config and base model), create the store
    and the sweep's parent run (the pre-training sweep's machinery, experiments.launch.sweep)."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with no_launch_on_error():  # Hydra would only warn about an exception here, and launch anyway
            self._prepare(config)

    def _prepare(self, config: DictConfig) -> None:
        grid = grid_overrides(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
        errors, bases_checked = [], set()
        for overrides in grid:
            try:
                cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
                validate(cfg)
                key = (cfg.base.run, tuple(cfg.base.pretrain or ()))
                if not cfg.base.hf_model and key not in bases_checked:
                    finished_base_run(cfg, Path(cfg.paths.root).resolve())
                    bases_checked.add(key)
            except ConfigError as err:
                errors.append(f"  {' '.join(overrides)} -> {err}")
        stop_on_invalid_points(errors, len(grid))
        self._parent = prepare_tracking(config, len(grid))
        if self._parent:
            _hand_to_jobs(config, PARENT_OVERRIDE, self._parent[1])
        print(f"[finetune sweep {config.sweep_id}] {len(grid)} grid points validated; launching", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent:
            tracking.finish_run(*self._parent)
