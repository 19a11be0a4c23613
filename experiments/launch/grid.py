"""A sweep's grid, as Hydra's basic sweeper builds it, and the one message that stops a sweep on invalid
grid points. Its own module so that the sweep callback (experiments.launch.sweep), the dry run and the
preflight check read it without importing each other."""
from __future__ import annotations

import sys

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # pinned hydra-core<1.4
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.config.errors import ConfigError
from experiments.config.plan import budget_overrides


def grid_overrides(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> list[list[str]]:
    """The override list of every job of the grid, built exactly as the basic sweeper builds it
    (cartesian product; a command-line value replaces the sweep file's for the same key)."""
    args = grid_args(sweeper_params, task_overrides)
    args = budget_overrides(args)  # a grid over one budget key nulls the other's default
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]


def grid_args(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> list[str]:
    """The sweep file's grid, then the command line's overrides (a later value of a key wins)."""
    return [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + \
        [o for o in task_overrides if not o.startswith("hydra.")]


def effective_grid(sweeper_params: dict[str, str] | None, task_overrides: list[str]) -> dict[str, str]:
    """key -> swept values, as the basic sweeper sees them (a command-line sweep replaces the file's)."""
    if isinstance(sweeper_params, DictConfig):
        sweeper_params = OmegaConf.to_container(sweeper_params)
    grid = {str(k): str(v) for k, v in (sweeper_params or {}).items()}
    args = [a for a in task_overrides if not a.startswith("hydra.")]
    for arg, o in zip(args, OverridesParser.create().parse_overrides(args)):
        if o.is_sweep_override() or o.key_or_group in grid:
            grid[o.key_or_group] = arg.split("=", 1)[1]
    return grid


def point_error(overrides: list[str], err: Exception) -> str:
    """One line of the invalid-points message: the point's overrides and what is wrong with it."""
    what = str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {' '.join(str(err).split())}"
    return f"  {' '.join(overrides)} -> {what}"


def stop_on_invalid_points(errors: list[str], n_points: int) -> None:
    """Every invalid grid point in one message, then exit 2 before anything is launched (none: return)."""
    if errors:
        print(f"config error: {len(errors)} of {n_points} grid points are invalid; nothing was launched:\n"
              + "\n".join(errors), file=sys.stderr)
        raise SystemExit(2)
