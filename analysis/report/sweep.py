"""End-to-end sweep analysis (``python -m analysis --tracking-uri URI``): load the sweep's runs, compute
every analysis the data support (analysis.compute: one results object), render report.md, summary.json,
points.csv and figures from it (analysis.report.render), save it as results.pkl (``--redraw DIR``), and
log the bundle to MLflow as a ``run_kind=analysis`` run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

import tracking_contract
from analysis.compute import compute_sweep
from analysis.options import Options
from analysis.progress import stage
from analysis.report.metrics import metrics
from analysis.report.render import render
from analysis.report.summary import headline_markdown
from analysis.results import save
from analysis.runs import load_runs, testtime_columns
from analysis.runs.store import log_analysis_run

ANALYSIS_ROOT = Path(__file__).resolve().parents[1]
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
    results = compute_sweep(raw, tracking_uri, experiment, sweep_id, opts)  # NoRunsError: nothing written
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    path, summary = render(results, out_dir)
    save(results, out_dir)
    if log_to_mlflow:
        # The headline is the run's description in the UI (MLflow shows the mlflow.note.content tag).
        log_analysis_run(tracking_uri, experiment, sweep_id, out_dir, metrics(results),
                         {"analysis.n_runs_used": str(len(results.usable))}, headline_markdown(summary["headline"]))
    stamp.write_text(fingerprint)
    return path
