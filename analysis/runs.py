"""Loading training runs from an MLflow tracking store into typed pandas frames.

The training side logs one MLflow run per job (see the data contract in the
project docs).  Everything downstream works on the frame returned by
``load_runs``; nothing else in ``analysis`` talks to MLflow for reading.
"""
from __future__ import annotations

import math
import re

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # mlflow is imported where runs are loaded: the fitting modules import this one, and
    # the analysis's worker processes (analysis/workers.py) should not pay mlflow's 1 s import
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

PRETRAIN_KIND = "pretrain"

# Test-time losses are logged as eval/loss_T{T}; the T list differs per sweep, so
# the columns are discovered rather than enumerated.
TESTTIME_METRIC = re.compile(r"^eval/loss_T(\d+)$")
TESTTIME_COLUMN = re.compile(r"^loss_T(\d+)$")

# frame column -> (source, key, dtype)
_COLUMNS: dict[str, tuple[str, str, str]] = {
    "sweep_id": ("tag", "sweep_id", "str"),
    "config_hash": ("tag", "config_hash", "str"),
    "model_name": ("param", "model.name", "str"),
    "model_kind": ("param", "model.kind", "str"),
    "mean_recurrence": ("param", "model.mean_recurrence", "int"),
    "mean_backprop": ("param", "model.mean_backprop", "int"),
    "injection": ("param", "model.injection", "str"),
    "lr": ("param", "train.lr", "float"),
    "flop_budget": ("param", "train.flop_budget", "float"),
    "tokens": ("param", "derived.tokens", "int"),
    "flops_per_token": ("param", "derived.flops_per_token", "int"),
    "n_params": ("param", "derived.n_params", "int"),
    "n_params_unrolled": ("param", "derived.n_params_unrolled", "int"),
    "n_params_core": ("param", "derived.n_params_core", "int"),  # logged by training (parcae.param_counts)
    "train_flops": ("param", "derived.train_flops", "float"),
    "loss": ("metric", "eval/loss", "float"),
}


def _to_float(value: object) -> float:
    """Parse an MLflow param/metric; 'None', '' and garbage become NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _get_experiment_id(client: MlflowClient, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"MLflow experiment {experiment!r} not found")
    return exp.experiment_id


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """All runs matching the filter, following MLflow's pagination."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_record(run: Run) -> dict[str, object]:
    data = run.data
    rec: dict[str, object] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,  # reports name runs by this and config_hash, not by run_id
        "status": run.info.status,
        "start_time": run.info.start_time,
        # Only the literal tag "true" marks divergence (data contract).
        "diverged": str(data.tags.get("diverged", "")).strip().lower() == "true",
    }
    for col, (source, key, _) in _COLUMNS.items():
        store = {"tag": data.tags, "param": data.params, "metric": data.metrics}[source]
        rec[col] = store.get(key)
    for key, value in data.metrics.items():
        m = TESTTIME_METRIC.match(key)
        if m:
            rec[f"loss_T{int(m.group(1))}"] = value
    return rec


def _type_columns(df: pd.DataFrame) -> pd.DataFrame:
    for col, (_, _, dtype) in _COLUMNS.items():
        if dtype == "str":
            df[col] = df[col].astype("string")
        else:
            values = df[col].map(_to_float).astype(float)
            # Nullable ints keep "missing" distinct from a real 0.
            df[col] = values.round().astype("Int64") if dtype == "int" else values
    for col in df.columns:
        if TESTTIME_COLUMN.match(col):
            df[col] = df[col].map(_to_float).astype(float)
    df["status"] = df["status"].astype("string")
    df["run_name"] = df["run_name"].astype("string")
    df["diverged"] = df["diverged"].astype(bool)
    df["start_time"] = pd.to_datetime(df["start_time"], unit="ms")
    return df


def _empty_frame() -> pd.DataFrame:
    cols = ["run_id", "run_name", "status", "start_time", "diverged", *_COLUMNS]
    return _type_columns(pd.DataFrame({c: pd.Series(dtype=object) for c in cols}))


def load_runs(tracking_uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """All pretrain runs of one sweep, whatever their status, one row per run.

    Test-time losses appear as float columns ``loss_T{T}`` (sorted by T).
    Selection of usable runs is left to :func:`split_usable` so that the
    report can say what was excluded and why.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = _get_experiment_id(client, experiment)
    sweep = sweep_id.replace("'", "\\'")
    runs = _search_all(client, exp_id, f"tags.sweep_id = '{sweep}'")
    # Members the sweep did not train (finished under another sweep_id, or before tracking was on) carry
    # a `sweep.member.<sweep_id>` tag (experiments.training.job); each run once, as a row of this sweep.
    seen = {r.info.run_id for r in runs}
    runs += [r for r in _search_all(client, exp_id, f"tags.`sweep.member.{sweep}` = 'true'")
             if r.info.run_id not in seen]
    # Analysis runs carry the same sweep_id tag; keep only training jobs.
    records = [{**_run_record(r), "sweep_id": sweep_id} for r in runs
               if r.data.tags.get("run_kind") == PRETRAIN_KIND]
    if not records:
        return _empty_frame()
    df = _type_columns(pd.DataFrame.from_records(records))
    t_cols = sorted(testtime_columns(df), key=lambda c: int(c[len("loss_T"):]))
    base = [c for c in df.columns if c not in t_cols]
    return df[base + t_cols].sort_values("start_time").reset_index(drop=True)


def latest_sweep_id(tracking_uri: str, experiment: str) -> str:
    """sweep_id of the most recently started pretrain run of the experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = _get_experiment_id(client, experiment)
    page = client.search_runs(
        [exp_id],
        filter_string=f"tags.run_kind = '{PRETRAIN_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in page:
        sweep = run.data.tags.get("sweep_id")
        if sweep:
            return sweep
    raise LookupError(f"no pretrain run with a sweep_id tag in experiment {experiment!r}")


def split_usable(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable runs, excluded runs with a ``reason`` column).

    Usable = FINISHED, not tagged diverged, with a finite final loss.  The
    reasons are checked in that order and the first that applies is reported.
    """
    finished = df["status"] == "FINISHED"
    diverged = df["diverged"]
    finite = np.isfinite(df["loss"].to_numpy(dtype=float))
    reason = pd.Series("", index=df.index, dtype="string")
    reason[~finite] = "no finite eval/loss"
    reason[diverged] = "diverged"
    reason[~finished] = "status " + df["status"].fillna("UNKNOWN")
    excluded = df.loc[reason != ""].assign(reason=reason[reason != ""])
    return df.loc[reason == ""].copy(), excluded


def testtime_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if TESTTIME_COLUMN.match(str(c))]


def testtime_long(df_raw: pd.DataFrame) -> pd.DataFrame:
    """Long frame [run_id, T, loss] of the test-time losses; missing T dropped."""
    cols = testtime_columns(df_raw)
    if not cols:
        return pd.DataFrame({"run_id": pd.Series(dtype="string"),
                             "T": pd.Series(dtype=int), "loss": pd.Series(dtype=float)})
    long = df_raw[["run_id", *cols]].melt(id_vars="run_id", var_name="T", value_name="loss")
    long["T"] = long["T"].str[len("loss_T"):].astype(int)
    long = long[np.isfinite(long["loss"].to_numpy(dtype=float))]
    return long.sort_values(["run_id", "T"]).reset_index(drop=True)
