"""Hydra callback that runs in the driver before any job: validate every grid point, create the store,
open the sweep's parent run.

Hydra's `on_multirun_start` runs once in the launching process (also with the SLURM launcher, where
jobs run elsewhere), so this is where a bad grid point stops the whole sweep before anything is
submitted, and where the sqlite store and experiment are created once (parallel first-time creation
races).

Parent/child runs: the driver finds (tags sweep_id + run_kind=sweep) or creates the sweep's parent run
and appends `tracking.parent_run_id=<id>` to the task overrides, which every job of the sweep is
composed from. The id is thus part of each job's own config: in-process jobs (basic launcher), submitit
pickles (frozen at submission, so a SLURM requeue resumes with the same parent) and the job's
`.hydra/overrides.yaml`. Each job's run carries it as `mlflow.parentRunId`. Single runs have no parent.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.tracking import store as tracking
from experiments.config.errors import ConfigError, TrackingError, fail
from experiments.config.plan import branching_on, budget_overrides, plan
from experiments.launch.grid import effective_grid, grid_args, grid_overrides, point_error, stop_on_invalid_points
from experiments.launch.sweep_status import write_manifest
from experiments.training.job import identify


def validate_grid(config_name: str, sweeper_params: dict[str, str] | None,
                  task_overrides: list[str], register_branches: bool = False
                  ) -> tuple[list[tuple[list[str], str]], dict[str, str]]:
    """Compose and validate every grid point; returns each point's overrides and run identity, and the trunk of
    each cooldown branch (run identity -> trunk hash; empty without branching). Raises SystemExit(2) listing
    every invalid point, before any job starts. register_branches: ask each cooldown branch's trunk to keep its
    stop (experiments.training.branching), so whichever job trains a trunk keeps all."""
    from experiments.training import branching  # torch: only once a sweep is really prepared
    errors, jobs, trunks = [], [], {}
    corpus_hashes: dict[tuple[Path, str, int], str] = {}
    grid = grid_overrides(sweeper_params, task_overrides)
    for overrides in grid:
        try:
            cfg = compose(config_name=config_name, overrides=overrides)
            p = plan(cfg)
        except Exception as err:  # a ConfigError, or e.g. an unknown config group option
            errors.append(point_error(overrides, err))
            continue
        key = (Path(cfg.paths.root).resolve(), json.dumps(OmegaConf.to_container(cfg.data)), p.model.block_size)
        try:
            if key not in corpus_hashes:  # builds the data once for all jobs (an empty corpus fails here)
                corpus_hashes[key] = identify(cfg, key[0], p=p).content_hash
            run_hash = identify(cfg, key[0], corpus_hashes[key], p).hash
            jobs.append((overrides, run_hash))
            branch = branching.branch_of(cfg, p, key[0], corpus_hashes[key]) if register_branches else None
            if branch:
                branching.register_stop(branch)
                trunks[run_hash] = branch.trunk_hash
        except ConfigError as err:
            errors.append(f"  {' '.join(overrides)} -> {err}")
    stop_on_invalid_points(errors, len(grid))
    return jobs, trunks


PARENT_OVERRIDE = "tracking.parent_run_id"


@contextlib.contextmanager
def no_launch_on_error() -> Iterator[None]:
    """Any error while preparing a sweep: one line, exit 2, nothing launched (SystemExit passes Hydra)."""
    try:
        yield
    except SystemExit:
        raise
    except ConfigError as err:
        fail("config", f"{err} Nothing was launched.")
    except TrackingError as err:
        fail("tracking", f"{err} Nothing was launched.")
    except Exception as err:
        fail("sweep", f"{type(err).__name__}: {err}. Nothing was launched.")


def prepare_tracking(config: DictConfig, n_jobs: int | None = None) -> tuple[str, str] | None:
    """Create the store and experiment once; return (uri, parent run id) of the sweep, or None when
    tracking is off. A parent id given on the command line (tracking.parent_run_id=...) is kept."""
    if not config.tracking.enabled:
        return None
    root = Path(config.paths.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = config.tracking.uri or tracking.default_uri(root)
    exp_id = tracking.ensure_experiment(uri, config.tracking.experiment, root / "mlartifacts")
    if config.tracking.get("parent_run_id"):
        return uri, config.tracking.parent_run_id
    tags = {"sweep.grid": json.dumps(effective_grid(config.hydra.sweeper.get("params"),
                                                    list(config.hydra.overrides.task)), sort_keys=True),
            "sweep.overrides": " ".join(o for o in config.hydra.overrides.task if not o.startswith("hydra.")),
            "sweep.dir": str(config.hydra.sweep.dir)}
    if n_jobs is not None:
        tags["sweep.n_jobs"] = str(n_jobs)
    return uri, tracking.sweep_parent_run(uri, exp_id, config.sweep_id, tags)


VARIED_OVERRIDE = "sweep.varied"  # the keys the grid varies (experiments.config.naming names runs by them)


def _hand_to_jobs(config: DictConfig, key: str, value: str) -> None:
    """Append `key=value` to the task overrides that Hydra composes every job from (read by hydra.multirun
    right after this callback, hydra-core 1.3), unless the command line already gives the key."""
    task = config.hydra.overrides.task
    if any(str(o).lstrip("+~").startswith(key + "=") for o in task):
        return  # given on the command line
    with read_write(config.hydra), open_dict(config.hydra):
        task.append(f"{key}={value}")


SEED_KEY = "train.seed"


def add_seed_axis(config: DictConfig) -> None:
    """sweep.seeds=K: every grid point runs train.seed, train.seed + 1, ..., + K - 1 as K ordinary runs (a grid axis
    like any other, so names, status and resume show the seed). A seed grid of one's own is refused beside it."""
    k = int(config.sweep.get("seeds", 1))
    if k < 1 or k > 1000:
        raise ConfigError("sweep.seeds", k, "must lie in [1, 1000]", "e.g. sweep.seeds=2")
    if k == 1:
        return
    base = int(config.train.seed)
    axis = ",".join(str(base + i) for i in range(k))
    grid = effective_grid(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
    given = grid.get(SEED_KEY)  # a seed grid, from the sweep file or the command line
    if given is not None and "," in given:
        if given.replace(" ", "") == axis:  # a resume: the manifest holds the axis this rule wrote
            return
        raise ConfigError("sweep.seeds", k, f"is given together with the seed grid {SEED_KEY}={given}",
                          f"keep one: sweep.seeds={k} (seeds {axis}), or the {SEED_KEY} grid alone")
    task = config.hydra.overrides.task
    with read_write(config.hydra), open_dict(config.hydra):
        kept = [o for o in task if str(o).lstrip("+").partition("=")[0] != SEED_KEY]
        task.clear()
        task.extend([*kept, f"{SEED_KEY}={axis}"])


BRANCHING_RECORD = "branching.json"


def branch_warmup_tokens(config: DictConfig) -> int:
    """The warm-up every branch of the sweep shares (train.warmup_tokens, when not given): train.warmup_fraction of
    the grid's smallest run, in whole steps. Kept in sweeps/<id>/branching.json at the first pass, so that the
    points adaptive bracketing adds later (and every resume) branch from the same trunks."""
    path = Path(config.paths.root).resolve() / "sweeps" / config.sweep_id / BRANCHING_RECORD
    if path.exists():
        return int(json.loads(path.read_text())["warmup_tokens"])
    task = [o for o in config.hydra.overrides.task if not str(o).startswith("hydra.")]
    tokens = []
    for overrides in grid_overrides(config.hydra.sweeper.get("params"), task):
        cfg = compose(config_name=config.hydra.job.config_name, overrides=[*overrides, "sweep.branching=false"])
        p = plan(cfg)
        tokens.append((p.tokens, cfg.train.batch_size * p.model.block_size))
    smallest, per_step = min(tokens)
    warmup = int(config.train.warmup_fraction * smallest) // per_step * per_step
    if not config.sweep.get("dry_run"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"warmup_tokens": warmup, "smallest_run_tokens": smallest}, indent=2))
        os.replace(tmp, path)
    return warmup


class PrepareSweep(Callback):
    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns an exception in a callback into a warning and launches the jobs anyway: every
        # failure here leaves as SystemExit(2) with one line, before anything is launched.
        with no_launch_on_error():
            self._prepare(config)

    def _prepare(self, config: DictConfig) -> None:
        from experiments.launch import dry_run, preflight  # import late: they load the model stack

        add_seed_axis(config)
        if branching_on(config) and config.train.get("warmup_tokens") is None:
            _hand_to_jobs(config, "train.warmup_tokens", str(branch_warmup_tokens(config)))
        if config.sweep.get("dry_run"):
            dry_run.report(config)  # validates and prices every point, then exits: nothing is launched
        preflight.check_device(config.train.device,
                               needs_visible_gpu=preflight.runs_here(config.hydra.launcher.get("_target_")))
        task_overrides = list(config.hydra.overrides.task)
        jobs, trunks = validate_grid(config.hydra.job.config_name, config.hydra.sweeper.get("params"),
                                     task_overrides, register_branches=branching_on(config))
        n = len(jobs)
        # Before tracking adds the parent id: a resume looks the parent up again by sweep id.
        write_manifest(Path(config.paths.root).resolve(), config.sweep_id, config.hydra.job.config_name,
                       task_overrides, jobs, trunks)
        self._parent = prepare_tracking(config, n)
        if self._parent:
            _hand_to_jobs(config, PARENT_OVERRIDE, self._parent[1])
        args = grid_args(config.hydra.sweeper.get("params"), task_overrides)
        for extra in budget_overrides(args)[len(args):]:  # the jobs compose as grid_overrides did
            _hand_to_jobs(config, *extra.split("=", 1))
        varied = list(effective_grid(config.hydra.sweeper.get("params"), task_overrides))
        if varied:
            _hand_to_jobs(config, VARIED_OVERRIDE, f"[{','.join(repr(k) for k in varied)}]")
        parent = f"; parent run {self._parent[1]}" if self._parent else ""
        print(f"[sweep {config.sweep_id}] {n} grid points validated{parent}; launching", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Not called when a job failed (hydra#1928): the parent then stays RUNNING until a re-run ends.
        if self._parent:
            tracking.finish_run(*self._parent)
