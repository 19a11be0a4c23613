"""CLI: python -m analysis --tracking-uri URI [--experiment parcae] [--sweep-id ID] --out DIR"""
from __future__ import annotations

import argparse
import sys

from analysis.report import NoRunsError, analyze
from analysis.runs import latest_sweep_id


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    p.add_argument("--tracking-uri", required=True,
                   help="MLflow tracking URI, e.g. sqlite:////abs/path/mlflow.db")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--sweep-id", default=None,
                   help="sweep to analyse (default: sweep of the latest pretrain run)")
    p.add_argument("--out", required=True, help="output directory for report.md and figures")
    p.add_argument("--no-mlflow-log", action="store_true",
                   help="do not log the report as an MLflow analysis run")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true",
                   help="keep the existing report if its runs, settings and analysis code are unchanged")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        sweep = args.sweep_id or latest_sweep_id(args.tracking_uri, args.experiment)
        path = analyze(args.tracking_uri, args.experiment, sweep, args.out,
                       log_to_mlflow=not args.no_mlflow_log, n_boot=args.n_boot, seed=args.seed,
                       reuse=args.reuse)
    except (NoRunsError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
