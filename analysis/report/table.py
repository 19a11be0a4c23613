"""Analysis of a researcher's own table (``python -m analysis --csv FILE``): the same isoFLOP
analysis, parametric laws, report, figures and summary.json as a sweep, without MLflow."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from pathlib import Path

import numpy as np

from analysis.holdout import holdout_predictions
from analysis.isoflop.optima import AXIS_COLUMN
from analysis.laws.results import fit_sweep_laws, law_supported
from analysis.options import Options
from analysis.report.document import Report, finish_report
from analysis.report.holdout_section import holdout_section
from analysis.report.isoflop_section import isoflop_group, isoflop_intro
from analysis.report.law_section import law_section
from analysis.report.markdown import table
from analysis.report.sections import approaches_section, runs_section, scaling_plots_section
from analysis.runs.table import Table


def _header(t: Table) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cols = ", ".join(f"{role} = `{name}`" for role, name in t.columns.items() if name)
    bins = t.bins.assign(max_rel_dev=100 * t.bins["max_rel_dev"]).rename(
        columns={"budget": "nominal budget C", "min": "smallest C", "max": "largest C",
                 "max_rel_dev": "largest deviation (%)"})
    return "\n".join([
        "## About this analysis", "",
        f"- table: `{t.path}` ({len(t.frame)} rows); generated {now}",
        f"- columns: {cols}",
        *(f"- {n}" for n in t.notes), "",
        "FLOP budgets (runs within the relative tolerance of each other share one nominal budget, the "
        "geometric mean of their C to 3 significant digits; the fits use the nominal value):", "",
        table(bins),
    ])


def analyze_table(t: Table, out_dir: str | Path, opts: Options | None = None) -> Path:
    """Analyse a validated table (analysis.runs.table.load_table); returns the report path."""
    opts = opts or Options()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = t.frame
    report = Report(qc=asdict(opts.qc))
    report.add(_header(t))
    report.add(isoflop_intro(opts))
    axes = tuple(a for a in ("params", "tokens", "mean_recurrence")
                 if np.isfinite(df[AXIS_COLUMN[a]].to_numpy(dtype=float)).any())
    isoflop_group(report, str(df["model_name"].iloc[0]), df, out_dir, opts, axes,
                  np.random.default_rng(opts.seed))
    ok, _ = law_supported(df)
    labels = dict(zip(df["run_id"], df["run_id"]))
    report.laws = fit_sweep_laws(df, opts.n_boot, opts.seed, labels) if ok else []
    report.add(law_section(df, opts.n_boot, opts.seed, report.warnings, report.metrics, out_dir,
                           report.laws))
    approaches_section(report, report.laws)
    holdout_section(report, holdout_predictions(df, axes, opts, str(df["model_name"].iloc[0])), out_dir)
    scaling_plots_section(report, df, out_dir)
    report.add(runs_section(df))
    path, _ = finish_report(report, out_dir, f"# Table analysis: `{Path(t.path).name}`", len(df), [],
                            {"kind": "table", "path": str(t.path), "columns": t.columns,
                             "budget_tolerance": t.tolerance, "budgets": t.bins.to_dict("records")}, df)
    return path

