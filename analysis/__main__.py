"""Fit the scaling laws of a sweep (from MLflow) or of your own table (CSV), write report.md, figures
and summary.json.

    python -m analysis --tracking-uri URI [--experiment parcae] [--sweep-id ID] --out DIR
    python -m analysis --csv FILE [--flops C] [--params N] [--tokens D] [--loss loss] [--loops COL] --out DIR
    python -m analysis --csv FILE --group experiment   each group with its own QC; exponents and differences
    python -m analysis ... --predict 1e21,1e23         N*, D*, µ_rec*, L* at target budgets, with intervals
    python -m analysis --redraw DIR [--out DIR2]   redraw report.md, figures and summary.json from
                                                   DIR/results.pkl (saved by every analysis), no refit

Bad input (a malformed table, an unknown sweep) is one line on stderr and exit status 2, with nothing
written. docs/analysis.md describes the table contract, the quality flags and summary.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import progress
from analysis.isoflop.qc import parse_qc
from analysis.options import MIN_BUDGETS, Options
from analysis.report.groups import analyze_groups, reference_agreement
from analysis.predict import parse_targets
from analysis.report import analyze, analyze_table, render
from analysis.results import ResultsError, load, save
from analysis.runs import NoRunsError, latest_sweep_id
from analysis.runs.table import DEFAULT_TOLERANCE, TableError, load_table
from analysis.runs.store import check_readable_store
from tracking_contract import TrackingError  # shared with experiments/ (stdlib only)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input: an MLflow sweep, or a table (--csv)")
    src.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. sqlite:////abs/path/mlflow.db")
    src.add_argument("--experiment", default="parcae")
    src.add_argument("--sweep-id", default=None,
                     help="sweep to analyse (default: sweep of the latest pretrain run)")
    src.add_argument("--csv", metavar="FILE", help="a table, one row per training run")
    src.add_argument("--redraw", metavar="DIR", help="redraw the report, figures and summary.json of an earlier "
                     "analysis from DIR/results.pkl without refitting (into --out, default DIR)")
    cols = p.add_argument_group("table columns (with --csv)")
    cols.add_argument("--flops", default=None, help="FLOPs column (default C, else budget, flops or compute)")
    cols.add_argument("--params", default=None, help="parameters column (default N; optional when "
                      "--tokens is given: N = C/(6D))")
    cols.add_argument("--tokens", default=None, help="tokens column (default D; optional when "
                      "--params is given: D = C/(6N))")
    cols.add_argument("--loss", default="loss", help="loss column (default loss)")
    cols.add_argument("--loops", default=None, help="mean recurrence µ_rec column (looped models)")
    cols.add_argument("--train-seed", default=None, metavar="COL",
                      help="training-seed column: rows at one grid point that differ only in it are seeds "
                           "(replicates), averaged and compared over seeds (--seed is the bootstrap's)")
    cols.add_argument("--group", default=None, metavar="COL",
                      help="analyse each value of this column on its own (its own QC, e.g. experiment or "
                           "dataset) and compare their exponents, with intervals of each difference")
    cols.add_argument("--reference-qc", default=None, metavar="COL",
                      help="a boolean column of published exclusions (default: `outlier` when present): "
                           "report how often our QC decision agrees with it, row by row")
    cols.add_argument("--budget-tolerance", type=float, default=DEFAULT_TOLERANCE,
                      help="FLOP values within this relative tolerance share a budget (default %(default)s)")
    p.add_argument("--out", default=None, help="output directory for report.md, summary.json, figures "
                   "(default: reports/<sweep id>, or reports/table-<file name> with --csv)")
    p.add_argument("--min-budgets", type=int, default=MIN_BUDGETS,
                   help="fewest clean budgets a power law is fitted through (default %(default)s)")
    p.add_argument("--keep-flagged", action="store_true",
                   help="keep QC-flagged points and budgets in the power laws (they are still reported)")
    p.add_argument("--no-mlflow-log", action="store_true",
                   help="do not log the report as an MLflow analysis run")
    p.add_argument("--qc", action="append", default=[], metavar="KEY=VALUE",
                   help="set a QC threshold (repeatable), e.g. --qc outlier_k=4 --qc exclude_disagreement=true; "
                        "docs/analysis.md lists the keys")
    p.add_argument("--holdout", type=int, default=1, metavar="K",
                   help="with >= 4 FLOP budgets, fit every approach without the K largest and check its "
                        "predictions of them (default %(default)s; 0: off)")
    p.add_argument("--predict", default=None, metavar="C1,C2",
                   help="target FLOP budgets, e.g. 1e21,1e23: the compute-optimal N*, D*, µ_rec* and loss there, "
                        "each with a 95 %% interval, from Approach 2 and Approach 3")
    p.add_argument("--n-boot", type=int, default=1000, help="noise draws and bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the existing report if its runs, settings and analysis code are unchanged")
    return p


def _redraw(folder: str, out: str | None) -> int:
    """The report of DIR/results.pkl drawn again (into out, default DIR), nothing refitted."""
    try:
        results = load(folder)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path, _ = render(results, out or folder)
    if out and Path(out).resolve() != Path(folder).resolve():
        save(results, out)  # the new folder can be redrawn in turn
    print(path)
    return 0


def _bad(message: str) -> int:
    """Bad input: one line on stderr, exit 2, nothing written."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    progress.enable()  # a bar per stage on a terminal, plain lines under SLURM/nohup/pipes
    if args.redraw:
        if args.csv or args.tracking_uri:
            parser.error("--redraw DIR redraws saved results: give it without --csv or --tracking-uri")
        return _redraw(args.redraw, args.out)
    if bool(args.csv) == bool(args.tracking_uri):
        parser.error("give either --csv FILE or --tracking-uri URI")
    if args.min_budgets < 2:
        parser.error(f"--min-budgets {args.min_budgets}: a power law needs at least 2 budgets")
    if args.holdout < 0:
        return _bad(f"--holdout {args.holdout}: give the number of largest budgets to hold out (>= 0), e.g. --holdout 1")
    if args.n_boot < 0 or 0 < args.n_boot < 100:
        return _bad(f"--n-boot {args.n_boot}: give 0 (no intervals) or at least 100 draws, e.g. --n-boot 1000")
    try:
        qc = parse_qc(args.qc)
        targets = parse_targets(args.predict) if args.predict else ()
    except ValueError as err:
        return _bad(str(err))
    opts = Options(n_boot=args.n_boot, seed=args.seed, min_budgets=args.min_budgets,
                   keep_flagged=args.keep_flagged, holdout=args.holdout, qc=qc, predict=targets)
    try:
        if args.csv:
            table = load_table(args.csv, {"flops": args.flops, "params": args.params,
                                          "tokens": args.tokens, "loss": args.loss, "loops": args.loops,
                                          "seed": args.train_seed, "group": args.group},
                               args.budget_tolerance)
            out = args.out or f"reports/table-{Path(args.csv).stem}"
            if args.group:
                path = analyze_groups(table, out, opts, args.reference_qc)
            else:
                path, results = analyze_table(table, out, opts)
                for line in reference_agreement(results, args.csv, args.reference_qc):
                    print(line)
        else:
            # seconds, not MLflow's minutes of retries on a dead server; never an empty store created
            check_readable_store(args.tracking_uri)
            sweep = args.sweep_id or latest_sweep_id(args.tracking_uri, args.experiment)
            # Named after the sweep, so the next analysis of another sweep never overwrites this one.
            path = analyze(args.tracking_uri, args.experiment, sweep, args.out or f"reports/{sweep}",
                           log_to_mlflow=not args.no_mlflow_log, reuse=args.reuse, opts=opts)
    except (NoRunsError, LookupError, TableError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
