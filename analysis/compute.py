"""One way through an analysis: load (analysis.runs) → compute (here: every fit, once, into one
``analysis.results.Results``) → render (analysis.report.render: report.md, figures, summary.json,
points.csv, without fitting anything).

``compute_sweep`` takes a sweep's runs as loaded from MLflow (it reads the metric histories of a
stability sweep and the points the sweep driver added from the store too); ``compute_table`` a validated
table. Both run the same isoFLOP, parametric-law, seed and held-out analyses.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import scipy

from analysis import stability, workers
from analysis.holdout import holdout_predictions, sweep_holdout
from analysis.isoflop.approach2 import LABEL
from analysis.isoflop.conventions import convention_entry
from analysis.isoflop.groups import isoflop_group, sweep_groups, used_runs
from analysis.isoflop.optima import AXIS_COLUMN
from analysis.isoflop.seeds import branch_table, seed_summaries, seed_summaries_from_runs
from analysis.laws.agreement import compare_approaches
from analysis.laws.results import fit_sweep_laws, law_supported
from analysis.options import Options
from analysis.predict import predictions
from analysis.progress import stage
from analysis.results import Results, Stability, TestTime
from analysis.runs import NoRunsError, split_usable, testtime_columns
from analysis.runs.labels import label_map, with_labels
from analysis.runs.table import Table
from analysis.testtime.forms import compare_forms
from analysis.testtime.saturation import fit_testtime_runs, tabulate_testtime


def _versions() -> dict[str, str]:
    import mlflow  # the version only; imported here, not at module load (see analysis.runs.store)

    return {"numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__,
            "matplotlib": matplotlib.__version__, "mlflow": mlflow.__version__}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def testtime_fits(usable: pd.DataFrame) -> TestTime:
    """L(T) per run and the Table-12 forms, or why there are none."""
    if not testtime_columns(usable):
        return TestTime(reason="no `eval/loss_T*` metrics logged")
    fits = fit_testtime_runs(usable)
    if not fits:
        return TestTime(reason="no run has test-time losses at >= 3 values of T")
    return TestTime(fits, compare_forms(usable))


def _laws(res: Results, df: pd.DataFrame) -> None:
    """Approach 3 (every law the runs support) and its comparison with Approach 2."""
    opts = res.options
    res.laws_supported = law_supported(df)
    res.laws = fit_sweep_laws(df, opts.n_boot, opts.seed, label_map(df)) if res.laws_supported[0] else []
    if res.approach2 and res.laws:
        res.approaches, _ = compare_approaches(res.approach2, res.laws)


def compute_sweep(raw: pd.DataFrame, tracking_uri: str, experiment: str, sweep_id: str,
                  opts: Options) -> Results:
    """Every fit of a sweep's analysis (raw: its runs as analysis.runs.load_runs returns them)."""
    from analysis.runs.store import adaptive_points, metric_histories  # MLflow, only on this path

    usable, excluded = split_usable(raw)
    if usable.empty:
        reasons = ", ".join(excluded["reason"].value_counts().index) if len(excluded) else "none"
        raise NoRunsError(f"sweep {sweep_id!r} in experiment {experiment!r} has no finished "
                          f"runs ({len(raw)} pretrain runs found; exclusion reasons: {reasons})")
    workers.pool()  # the fits' worker processes start now and import while the isoFLOP stage runs
    res = Results(kind="mlflow", title=f"# Sweep analysis: `{sweep_id}`",
                  source={"kind": "mlflow", "tracking_uri": tracking_uri, "experiment": experiment,
                          "sweep_id": sweep_id},
                  options=opts, generated=_now(), versions=_versions(),
                  runs=pd.concat([usable, excluded]).loc[raw.index], usable=usable, excluded=excluded)
    res.adaptive = adaptive_points(tracking_uri, experiment, sweep_id)
    if stability.stability_supported(raw):
        with stage("stability"):
            th = stability.Thresholds()
            hist = metric_histories(tracking_uri, raw["run_id"].astype(str).tolist(), stability.HISTORY_KEYS)
            res.stability = Stability(stability.stability_table(raw, hist, th), hist, th)
    with stage("QC, isoFLOP (fits, noise draws)"):
        res.isoflop = sweep_groups(usable, opts)
        res.seeds = seed_summaries(res.isoflop) or seed_summaries_from_runs(usable)
    used = used_runs(res.isoflop, usable, opts.keep_flagged)  # the QC stage's decisions, read by every fit
    with stage("compute conventions"):
        res.conventions = convention_entry(used, opts)
    with stage("test-time (fits)"):
        res.testtime = testtime_fits(usable)
    with stage("laws (fits; each bootstrap has its own bar)"):
        _laws(res, used)
    with stage("held-out budgets (refits, predictions)"):
        res.holdout = sweep_holdout(used, opts)
    with stage("predictions"):
        res.predictions = predictions(res, opts.predict)
    res.branches = branch_table(with_labels(raw))
    res.warnings = collect_warnings(res)
    return res


def compute_table(t: Table, opts: Options) -> Results:
    """Every fit of a table's analysis (analysis.runs.table.load_table)."""
    df = t.frame
    res = Results(kind="table", title=f"# Table analysis: `{Path(t.path).name}`",
                  source={"kind": "table", "path": str(t.path), "columns": t.columns,
                          "budget_tolerance": t.tolerance, "budgets": t.bins.to_dict("records")},
                  options=opts, generated=_now(), versions=_versions(),
                  runs=df, usable=df, excluded=df.iloc[0:0].assign(reason=pd.Series(dtype=str)), table=t)
    axes = table_axes(df)
    name = str(df["model_name"].iloc[0])
    res.isoflop = [isoflop_group(name, df, opts, axes, np.random.default_rng(opts.seed))]
    res.seeds = seed_summaries(res.isoflop) or seed_summaries_from_runs(df)
    used = used_runs(res.isoflop, df, opts.keep_flagged)
    _laws(res, used)
    res.holdout = holdout_predictions(used, axes, opts, name)
    res.predictions = predictions(res, opts.predict)
    res.warnings = collect_warnings(res)
    return res


def table_axes(df: pd.DataFrame) -> tuple[str, ...]:
    """A table's allocation axes: those it has values for (model size first: the QC stage screens along
    the first that varies within a budget)."""
    return tuple(a for a in ("params", "tokens", "mean_recurrence")
                 if np.isfinite(df[AXIS_COLUMN[a]].to_numpy(dtype=float)).any())


# --- the report's warnings, derived once from the results --------------------------------------------

def _isoflop_warnings(res: Results) -> list[str]:
    out = []
    for r in res.axes:
        label = LABEL[r.axis]
        for o in r.optima:
            where = f"{r.group}: {label} at C={o.budget:.3g}"
            out += [f"{where}: point {p['run_id']} ({p['value']:.4g}) left out: {p['code']}"
                    for p in o.points_excluded]
            out += [f"{where}: {w}" for w in o.warnings]
            if not o.ok:
                out.append(f"{where} left out of the power law: " + "; ".join(o.reasons))
        if r.law is not None:
            out += [f"{r.group}: {label} power law: {w}" for w in r.law.warnings + r.notes]
    return out


def _testtime_warnings(res: Results) -> list[str]:
    """One warning per set of flags, naming its runs: a sweep's curves mostly fail for the same reason,
    and one line per run buried the report's other warnings under a dozen near-identical ones."""
    if res.testtime is None or not res.testtime.fits:
        return []
    t = tabulate_testtime(res.usable, res.testtime.fits).sort_values(["mean_recurrence", "flop_budget"],
                                                                     kind="stable")
    t["run"] = t["run_id"].map(label_map(res.usable))
    ident = t["z_identified"].astype(bool)
    return [f"test-time fit not identified for {len(runs)} of {len(t)} runs: {flags} — " + ", ".join(sorted(runs))
            for flags, runs in t[~ident].groupby("flags", sort=False)["run"]]


def collect_warnings(res: Results) -> list[str]:
    """The report's warnings, in the order of its sections."""
    out = _isoflop_warnings(res)
    out += [w for s in res.seeds for w in s.warnings]
    out += _testtime_warnings(res)
    out += [f"parametric law `{r.name}`: {w}" for r in res.laws for w in r.warnings]
    if res.approach2 and res.laws:
        out += compare_approaches(res.approach2, res.laws)[1]
    return out
