"""The central path at test scale: a Hydra sweep into a temporary MLflow store, fitted by analysis."""

import json
import re

from mlflow.tracking import MlflowClient

from analysis.report import analyze
from helpers import SMALL, pretrain

GRID = [*SMALL, "model.mean_recurrence=1,2,4", "train.flop_budget=3e10,6e10,1.2e11", "sweep_id=e2e"]


def test_sweep_trains_tracks_fits_and_skips_on_rerun(tmp_path):
    r = pretrain(tmp_path, "sweep=isoflop", *GRID)
    assert r.returncode == 0, r.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parcae")
    runs = client.search_runs([exp.experiment_id], "tags.sweep_id = 'e2e' and tags.run_kind = 'pretrain'")
    assert len(runs) == 9 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:
        assert {"eval/loss", "eval/loss_T1", "eval/loss_T8", "train/loss"} <= set(run.data.metrics)
        assert run.data.tags["config_hash"] and run.data.params["derived.tokens"]
        assert run.data.tags["code_version"] != "unknown"  # the git commit that produced the run
        assert float(run.data.params["derived.train_flops"]) <= float(run.data.params["train.flop_budget"])
    assert len({run.data.tags["config_hash"] for run in runs}) == 9
    assert {run.info.run_name for run in runs} == {f"e2e/mu{m}-C{c}" for m in (1, 2, 4) for c in ("3e10", "6e10", "1.2e11")}

    # 100 resamples: this checks the path (store → report → MLflow); interval statistics are checked in
    # tests/analysis and timed at the default 1,000 by `make bench-fit`.
    report = analyze(uri, "parcae", "e2e", tmp_path / "report", log_to_mlflow=True, n_boot=100)
    text = report.read_text()
    head = text[:2000]  # the report leads with its answer: both exponents, fitted or with the reason they are not
    assert "µ_rec* ∝ C^" in head and "D* ∝ C^" in head
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert {"mean_recurrence", "tokens"} <= set(summary["isoflop"]) and summary["headline"]
    assert re.search(r"\| R²|r2", text)  # test-time fits with their R²
    assert {"isoflop", "testtime"} <= {p.stem.split("_")[0] for p in (tmp_path / "report").rglob("*.png")}
    analysis_runs = client.search_runs([exp.experiment_id], "tags.run_kind = 'analysis'")
    assert len(analysis_runs) == 1

    again = pretrain(tmp_path, "sweep=isoflop", *GRID)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip]") == 9
    assert len(client.search_runs([exp.experiment_id], "tags.sweep_id = 'e2e' and tags.run_kind = 'pretrain'")) == 9
