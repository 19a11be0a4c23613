"""Print a job's config as it will run: `python -m experiments.show_config [hydra overrides]`
(`make show-config ARGS='...'`).

Hydra's `--cfg job` prints every model field as null: a model is a preset plus explicit overrides, resolved
in Python (experiments.config.plan). This prints the composed config with the model resolved, then what
the plan derives from it: tokens, steps, FLOPs per token, training FLOPs, parameters, and the config hash
that names the run dir. The hash needs the data's content hash: computed at once for data.source=stdlib;
for other sources only with --hash, which builds the data into the cache (as prepare_data does) or finds
it there. A grid (a sweep file, or comma-separated values) shows its first point and lists every point's
derived numbers, one line each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.config.errors import ConfigError, one_line_errors
from experiments.config.identity import identity
from experiments.config.naming import point_label
from experiments.config.plan import Plan, plan
from experiments.config.schema import register
from experiments.data import run_data
from experiments.launch.dry_run import cpu_throughput, throughput
from experiments.launch.preflight import CONF, preflight
from experiments.launch.sweep import effective_grid, grid_overrides
from experiments.tracking import store as tracking
from experiments.training.progress import fmt_seconds
from parcae import executed_flops_per_token

CONFIG_NAME = "config"
_DATA_HASHES: dict[str, str] = {}  # data config → content hash, within one command
register()  # the schemas the config's defaults list names (as experiments.pretrain does)


def compose_points(overrides: list[str]) -> tuple[list[str], list[tuple[list[str], DictConfig]]]:
    """The grid's keys and, per grid point, its overrides and composed job config (one point without a grid)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]  # compose takes no sweep
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        params = compose(config_name=CONFIG_NAME, overrides=single, return_hydra_config=True).hydra.sweeper.params
        sweeper_params = OmegaConf.to_container(params) if params else {}
        keys = list(effective_grid(sweeper_params, overrides))
        points = [(point, compose(config_name=CONFIG_NAME, overrides=point))
                  for point in grid_overrides(sweeper_params, overrides)]
    return keys, points


def config_hash(cfg: DictConfig, p: Plan, build: bool) -> tuple[str | None, str | None]:
    """(config hash, run dir), or (None, why not) when the data would have to be built first."""
    if cfg.data.source != "stdlib" and not build:
        return None, "pass --hash to build or find the data in the cache (as prepare_data does) and hash it"
    root = Path(cfg.paths.root).resolve()
    # A grid's points share their data: hash it once per data config (building the corpus takes a while).
    key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True), str(root / cfg.paths.cache),
                      p.model.block_size], sort_keys=True, default=str)
    if key not in _DATA_HASHES:
        _DATA_HASHES[key] = run_data.content_hash(cfg, root, p.model.block_size)
    run_hash = identity(cfg, p.model, _DATA_HASHES[key])
    return run_hash, str(root / cfg.paths.runs / run_hash)


def wall_seconds(cfg: DictConfig, p: Plan) -> tuple[float, str]:
    """(estimated training wall time of one point on one process, the throughput assumed): executed FLOPs
    over what make bench / make bench-gpu measured (experiments.launch.dry_run), else a nominal rate."""
    root = Path(cfg.paths.root).resolve()
    flops, source = throughput(root) if cfg.train.device.startswith("cuda") else cpu_throughput(root)
    return p.tokens * executed_flops_per_token(p.model) / flops, f"{flops / 1e9:,.0f} GFLOP/s executed, {source}"


def derived(cfg: DictConfig, p: Plan, build: bool, varied: list[str]) -> dict:
    run_hash, run_dir = config_hash(cfg, p, build)
    seconds, _ = wall_seconds(cfg, p)
    return {"label": point_label(p.resolved_config(cfg), varied), "tokens": p.tokens, "steps": p.steps,
            "tokens_per_step": cfg.train.batch_size * p.model.block_size, "flops_per_token": p.flops_per_token,
            "train_flops": p.train_flops, "n_params": p.n_params, "n_params_unrolled": p.n_params_unrolled,
            "n_params_core": p.n_params_core, "tokens_per_param": round(p.tokens / p.n_params, 1),
            "mean_backprop": p.model.backprop_depth(), "est_wall_time": fmt_seconds(seconds),
            "config_hash": run_hash, "run_dir": run_dir}


def grid_line(d: dict) -> str:
    return (f"{d['label']}: {d['tokens']:,} tokens, {d['steps']:,} steps, {d['train_flops']:.3g} FLOPs, "
            f"{d['n_params']:,} params ({d['tokens_per_param']} tokens/param), ~{d['est_wall_time']}, "
            f"hash {d['config_hash'] or '—'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.show_config", description=__doc__.split("\n\n")[1],
                                     epilog="e.g. python -m experiments.show_config model=small "
                                            "train.flop_budget=2e12 model.mean_recurrence=4")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as python -m experiments.pretrain takes them")
    parser.add_argument("--hash", action="store_true",
                        help="compute the config hash also for data sources other than stdlib (builds the data)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args([a for a in argv if a not in ("-m", "--multirun")])  # a grid is shown either way
    overrides = args.overrides
    overrides = preflight(CONFIG_NAME, overrides, check_plan=False)  # unknown keys, wrong types: one line, exit 2
    with one_line_errors():
        keys, points = compose_points(overrides)
        plans: list[Plan | ConfigError] = []
        for _, cfg in points:
            try:
                plans.append(plan(cfg))
            except ConfigError as err:  # in a grid, one bad point does not hide the others
                plans.append(err)
        valid = [i for i, p in enumerate(plans) if isinstance(p, Plan)]
        if not valid:
            raise plans[0]
        shown = valid[0]
        cfg, p = points[shown][1], plans[shown]
        # Through the same secret filter as the run dir's config.yaml: this output lands in logs and issues.
        print(OmegaConf.to_yaml(OmegaConf.create(tracking.redact_config(p.resolved_config(cfg)))), end="")
        print("# derived (experiments.config.plan; the hash names runs/<hash>):")
        print(OmegaConf.to_yaml(OmegaConf.create({"derived": derived(cfg, p, args.hash, keys)})), end="")
        if len(points) > 1:
            print(f"# a grid of {len(points)} points over {', '.join(keys)}; shown above: point {shown + 1} "
                  f"({' '.join(o for o in points[shown][0] if o.partition('=')[0] in keys)})")
            for (point, point_cfg), pp in zip(points, plans):
                print("#   " + (grid_line(derived(point_cfg, pp, args.hash, keys)) if isinstance(pp, Plan)
                                else f"{' '.join(point)}: invalid: {pp}"))
        estimates = [wall_seconds(points[i][1], plans[i]) for i in valid]
        print(f"# estimated wall time: {fmt_seconds(sum(s for s, _ in estimates))}"
              + (f" for {len(valid)} points, one at a time" if len(points) > 1 else "")
              + f"; training only (evaluation and data preparation add to it), at {estimates[0][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
