"""End-to-end sweep analysis (``python -m analysis --tracking-uri URI``): load the sweep's runs, run
every analysis the data support, write report.md, summary.json and figures, and log the bundle to
MLflow as a ``run_kind=analysis`` run."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import scipy

import tracking_contract
from analysis import stability, workers
from analysis.holdout import sweep_holdout
from analysis.laws.results import fit_sweep_laws, law_supported
from analysis.options import Options
from analysis.progress import stage
from analysis.report.document import Report, finish_report, with_labels
from analysis.report.holdout_section import holdout_section
from analysis.report.isoflop_section import conventions_section, isoflop_section
from analysis.report.law_section import law_section
from analysis.report.sections import (adaptive_section, approaches_section, excluded_section, runs_section,
                                      scaling_plots_section, stability_section, testtime_section)
from analysis.report.summary import headline_markdown
from analysis.runs import NoRunsError, load_runs, split_usable, testtime_columns
from analysis.runs.store import log_analysis_run

ANALYSIS_ROOT = Path(__file__).resolve().parents[1]


def _header(raw: pd.DataFrame, usable: pd.DataFrame, excluded: pd.DataFrame,
            experiment: str, sweep_id: str, tracking_uri: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "## About this analysis",
        "",
        f"- experiment: `{experiment}`; tracking store: `{tracking_uri}`",
        f"- generated: {now}; numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}, mlflow {mlflow.__version__}",
        f"- pretrain runs found: {len(raw)}; used: {len(usable)}; excluded: {len(excluded)}",
        "- loss = `eval/loss`, validation loss in nats/token at T = mu_rec",
    ])


FINGERPRINT = "inputs.sha256"


def _fingerprint(raw: pd.DataFrame, experiment: str, sweep_id: str, opts: Options) -> str:
    """What a report depends on: the sweep's runs and their results, the settings, the analysis code."""
    digest = hashlib.sha256(f"{experiment}|{sweep_id}|{opts}".encode())
    cols = ["run_id", "status", "diverged", "loss", *testtime_columns(raw)]
    digest.update(raw[cols].sort_values("run_id").to_csv(index=False).encode())
    # every module of the package, sub-packages included, and the tracking contract it reads runs by
    for source in sorted(ANALYSIS_ROOT.rglob("*.py")) + [Path(tracking_contract.__file__)]:
        digest.update(str(source.relative_to(ANALYSIS_ROOT.parent)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _log_to_mlflow(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path,
                   report: Report, n_used: int, headline: list[str]) -> str:
    # The headline is the run's description in the UI (MLflow shows the mlflow.note.content tag).
    return log_analysis_run(tracking_uri, experiment, sweep_id, out_dir, report.metrics,
                            {"analysis.n_runs_used": str(n_used)}, headline_markdown(headline))


def analyze(tracking_uri: str, experiment: str, sweep_id: str, out_dir: str | Path,
            log_to_mlflow: bool = True, n_boot: int = 1000, seed: int = 0, reuse: bool = False,
            opts: Options | None = None) -> Path:
    """Analyse one sweep; returns the path of the written report.md (summary.json beside it).

    opts: analysis settings (n_boot and seed are the short form of them).
    reuse: when the report in out_dir was made from exactly these runs, settings and analysis code,
    return it without refitting (a re-run sweep that trained nothing then costs seconds, not minutes).
    """
    opts = opts or Options(n_boot=n_boot, seed=seed)
    out_dir = Path(out_dir)
    with stage("loading runs"):
        raw = load_runs(tracking_uri, experiment, sweep_id)
    fingerprint = _fingerprint(raw, experiment, sweep_id, opts)
    stamp = out_dir / FINGERPRINT
    if reuse and (out_dir / "report.md").exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return out_dir / "report.md"
    workers.pool()  # the fits' worker processes start now and import while the isoFLOP stage runs
    usable, excluded = split_usable(raw)
    if usable.empty:
        reasons = ", ".join(excluded["reason"].value_counts().index) if len(excluded) else "none"
        raise NoRunsError(f"sweep {sweep_id!r} in experiment {experiment!r} has no finished "
                          f"runs ({len(raw)} pretrain runs found; exclusion reasons: {reasons})")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    report = Report(qc=asdict(opts.qc))
    report.add(_header(raw, usable, excluded, experiment, sweep_id, tracking_uri))
    report.add(excluded_section(excluded))
    adaptive = adaptive_section(tracking_uri, experiment, sweep_id)
    if adaptive:
        report.add(adaptive)
    if stability.stability_supported(raw):
        with stage("stability"):
            stability_section(report, raw, out_dir, tracking_uri)
    with stage("isoFLOP (fits, bootstrap, figures)"):
        isoflop_section(report, usable, out_dir, opts)
    with stage("compute conventions"):
        conventions_section(report, usable, opts)
    with stage("test-time (fits, figures)"):
        testtime_section(report, usable, out_dir)
    labels = with_labels(usable).set_index(usable["run_id"].astype(str))["run"].to_dict()
    with stage("laws (fits; each bootstrap has its own bar)"):
        report.laws = (fit_sweep_laws(usable, opts.n_boot, opts.seed, labels)
                       if law_supported(usable)[0] else [])
    with stage("laws (report, figures)"):
        report.add(law_section(usable, opts.n_boot, opts.seed, report.warnings, report.metrics, out_dir,
                               report.laws))
        approaches_section(report, report.laws)
    with stage("held-out budgets (refits, predictions)"):
        holdout_section(report, sweep_holdout(usable, opts), out_dir)
    with stage("plots (loss vs scale)"):
        scaling_plots_section(report, usable, out_dir)
    report.add(runs_section(usable))
    path, summary = finish_report(report, out_dir, f"# Sweep analysis: `{sweep_id}`", len(usable),
                                  excluded["reason"].tolist(),
                                  {"kind": "mlflow", "tracking_uri": tracking_uri,
                                   "experiment": experiment, "sweep_id": sweep_id},
                                  pd.concat([usable, excluded]).loc[raw.index])
    if log_to_mlflow:
        _log_to_mlflow(tracking_uri, experiment, sweep_id, out_dir, report, len(usable), summary["headline"])
    stamp.write_text(fingerprint)
    return path
