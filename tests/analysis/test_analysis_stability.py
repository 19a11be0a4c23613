"""Stability classification from logged curves, against a real temporary MLflow store."""

import math

import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis.runs.store import metric_histories
from analysis.stability import (HISTORY_KEYS, Thresholds, classify, count_spikes, outcome_grid,
                                stability_table)


def test_count_spikes_counts_excursions_after_warmup():
    loss = np.array([5.0, 4.0, 3.0, 2.0, 2.0, 2.6, 2.7, 2.0, 1.9, 3.0, 1.8])
    assert count_spikes(loss, 0.15, skip=0) == 2
    assert count_spikes(loss, 0.15, skip=9) == 1
    assert count_spikes(np.linspace(5, 2, 50), 0.15, skip=0) == 0


def _hist(run_id, loss, state):
    rows = [(run_id, "train/loss", i, v) for i, v in enumerate(loss)]
    rows += [(run_id, "monitor/state_norm", i, v) for i, v in enumerate(state)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def test_classify_orders_outcomes_worst_first():
    run = pd.Series({"run_id": "a", "loss": 2.0, "diverged": False})
    smooth, flat = np.linspace(5, 2, 20), np.full(20, 10.0)
    assert classify(run, _hist("a", smooth, flat))["outcome"] == "converged"
    spiky = smooth.copy()
    spiky[15] = 4.0
    assert classify(run, _hist("a", spiky, flat))["outcome"] == "spiky"
    exploding = np.geomspace(10, 1e6, 20)
    out = classify(run, _hist("a", spiky, exploding))
    assert out["outcome"] == "exploded" and out["state_growth"] > 1e4
    stopped = pd.Series({"run_id": "a", "loss": math.nan, "diverged": True})
    assert classify(stopped, _hist("a", smooth, flat))["outcome"] == "diverged"


def test_histories_and_grid_from_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("parcae", artifact_location=(tmp_path / "art").as_uri())
    records = []
    for inj, lr, grow in [("diagonal", 1e-2, 1.0), ("linear", 1e-2, 1e5), ("diagonal", 3e-3, 1.0)]:
        run_id = client.create_run(exp).info.run_id
        client.log_batch(run_id, metrics=[
            *(Metric("train/loss", 5 - 3 * i / 19, 0, i) for i in range(20)),
            *(Metric("monitor/state_norm", 10 * grow ** (i / 19), 0, i) for i in range(20))])
        records.append({"run_id": run_id, "injection": inj, "lr": lr, "mean_recurrence": 8,
                        "loss": 2.0, "diverged": False})
    runs = pd.DataFrame(records)
    hist = metric_histories(uri, runs["run_id"].tolist(), HISTORY_KEYS)
    assert len(hist) == 3 * 2 * 20
    table = stability_table(runs, hist, Thresholds())
    grid = outcome_grid(table).set_index("injection")
    assert grid.loc["diagonal", "lr=0.01"] == "✓" and grid.loc["linear", "lr=0.01"] == "↑"
    assert grid.loc["diagonal", "lr=0.003"] == "✓"


def test_a_hard_batch_seen_by_every_run_is_not_a_spike():
    loss = np.array([5.0, 4.0, 3.0, 2.0, 2.0, 2.7, 2.0, 1.9])
    common = loss.copy()  # the median run saw the same jump at the same step
    assert count_spikes(loss, 0.3, skip=0) == 1
    assert count_spikes(loss, 0.3, skip=0, reference=common) == 0
    quiet = np.array([5.0, 4.0, 3.0, 2.0, 2.0, 2.0, 2.0, 1.9])
    assert count_spikes(loss, 0.3, skip=0, reference=quiet) == 1
