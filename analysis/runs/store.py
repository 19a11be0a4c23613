"""The one place the analysis talks to MLflow: reading a sweep's runs into a typed pandas frame, metric
histories, fine-tuning runs, the sweep's parent run, and logging the finished analysis as a run.

The training side logs one MLflow run per job; the tag names, the quoting of filter values and the
sweep-parent rule come from the shared tracking contract (``tracking_contract``), so both sides agree
without the analysis importing experiments/. Everything downstream works on the frame returned by
``load_runs``.
"""
from __future__ import annotations

import json
import math
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.runs.frame import TESTTIME_COLUMN, testtime_columns
from tracking_contract import (ADAPTIVE_TAG, ANALYSIS_KIND, BRANCH_FROM_TOKENS_TAG, BRANCH_TRUNK_TAG, DIVERGED_TAG,
                               NOTE_TAG, PARENT_TAG, PRETRAIN_KIND, REPLICATE_TAG, RUN_KIND_TAG, SWEEP_ID_TAG,
                               TrackingError, check_server, find_sweep_parent, is_http, member_filter, quote,
                               sweep_filter)

if TYPE_CHECKING:  # mlflow is imported where runs are loaded: the fitting modules import this package,
    # and the analysis's worker processes (analysis/workers.py) should not pay mlflow's 1 s import
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Test-time losses are logged as eval/loss_T{T}; the T list differs per sweep, so they are discovered.
TESTTIME_METRIC = re.compile(r"^eval/loss_T(\d+)$")

# frame column -> (source, key, dtype)
_COLUMNS: dict[str, tuple[str, str, str]] = {
    "sweep_id": ("tag", SWEEP_ID_TAG, "str"),
    "config_hash": ("tag", "config_hash", "str"),
    "model_name": ("param", "model.name", "str"),
    "model_kind": ("param", "model.kind", "str"),
    "mean_recurrence": ("param", "model.mean_recurrence", "int"),
    "mean_backprop": ("param", "model.mean_backprop", "int"),
    "injection": ("param", "model.injection", "str"),
    "lr": ("param", "train.lr", "float"),
    # seeds as replicates (sweep.seeds=K): runs of one grid point differ only in train.seed and share the
    # replicate_of tag (absent on older runs: then a grid point is its model, µ_rec and budget)
    "seed": ("param", "train.seed", "int"),
    "replicate_of": ("tag", REPLICATE_TAG, "str"),
    # cooldown branches: the trunk a branch was cut from, and where (training tokens)
    "branch_trunk": ("tag", BRANCH_TRUNK_TAG, "str"),
    "branch_from_tokens": ("tag", BRANCH_FROM_TOKENS_TAG, "float"),
    "flop_budget": ("param", "train.flop_budget", "float"),
    "tokens": ("param", "derived.tokens", "int"),
    "flops_per_token": ("param", "derived.flops_per_token", "int"),
    # what the kernels execute (attention scores, the recurrence's extra ops); only in newer runs
    "executed_flops_per_token": ("param", "derived.executed_flops_per_token", "int"),
    "n_params": ("param", "derived.n_params", "int"),
    "n_params_unrolled": ("param", "derived.n_params_unrolled", "int"),
    "n_params_core": ("param", "derived.n_params_core", "int"),  # logged by training (parcae.param_counts)
    "n_params_embedding": ("param", "derived.n_params_embedding", "int"),  # token (+ value) embeddings
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


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_readable_store(tracking_uri: str) -> None:
    """Raise TrackingError unless the URI names a store the analysis can read without creating anything:
    an existing sqlite database file, or an MLflow server that answers. (MLflow itself would create
    folders and an empty database for a mistyped sqlite path, and retry a dead server for minutes.)"""
    fix = "give sqlite:////abs/path/mlflow.db (an existing store) or http(s)://host:port of an MLflow server"
    if is_http(tracking_uri):
        check_server(tracking_uri)
        return
    if not tracking_uri.startswith("sqlite:///"):
        raise TrackingError(f"--tracking-uri {tracking_uri}: the analysis reads sqlite or http(s) stores only; {fix}")
    db = Path(tracking_uri[len("sqlite:///"):])
    if not db.is_file():
        raise TrackingError(f"--tracking-uri {tracking_uri}: no database file {db}; {fix}")
    with open(db, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise TrackingError(f"--tracking-uri {tracking_uri}: {db} is not an sqlite database; {fix}")


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


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
        "diverged": str(data.tags.get(DIVERGED_TAG, "")).strip().lower() == "true",
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
    client = _client(tracking_uri)
    exp_id = _get_experiment_id(client, experiment)
    runs = _search_all(client, exp_id, sweep_filter(sweep_id))
    # Members the sweep did not train (finished under another sweep_id, or before tracking was on) carry
    # a `sweep.member.<sweep_id>` tag (experiments.training.job); each run once, as a row of this sweep.
    seen = {r.info.run_id for r in runs}
    runs += [r for r in _search_all(client, exp_id, member_filter(sweep_id)) if r.info.run_id not in seen]
    # Analysis runs carry the same sweep_id tag; keep only training jobs.
    records = [{**_run_record(r), "sweep_id": sweep_id} for r in runs
               if r.data.tags.get(RUN_KIND_TAG) == PRETRAIN_KIND]
    if not records:
        return _empty_frame()
    df = _type_columns(pd.DataFrame.from_records(records))
    t_cols = sorted(testtime_columns(df), key=lambda c: int(c[len("loss_T"):]))
    base = [c for c in df.columns if c not in t_cols]
    return df[base + t_cols].sort_values("start_time").reset_index(drop=True)


def latest_sweep_id(tracking_uri: str, experiment: str) -> str:
    """sweep_id of the most recently started pretrain run of the experiment."""
    client = _client(tracking_uri)
    exp_id = _get_experiment_id(client, experiment)
    page = client.search_runs(
        [exp_id],
        filter_string=f"tags.{RUN_KIND_TAG} = '{quote(PRETRAIN_KIND)}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in page:
        sweep = run.data.tags.get(SWEEP_ID_TAG)
        if sweep:
            return sweep
    raise LookupError(f"no pretrain run with a sweep_id tag in experiment {experiment!r}")


def search_runs(tracking_uri: str, experiment: str, filter_string: str) -> list[Run]:
    """Every run of the experiment matching an MLflow filter (built with tracking_contract's quoting)."""
    client = _client(tracking_uri)
    return _search_all(client, _get_experiment_id(client, experiment), filter_string)


def metric_histories(tracking_uri: str, run_ids: list[str], keys: tuple[str, ...]) -> pd.DataFrame:
    """Long frame [run_id, key, step, value] of the metric histories of the given runs."""
    client = _client(tracking_uri)
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append((run_id, key, m.step, m.value))
    df = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return df.sort_values(["run_id", "key", "step"]).reset_index(drop=True)


def _sweep_parent(client: MlflowClient, experiment: str, sweep_id: str):
    exp = client.get_experiment_by_name(experiment)
    return find_sweep_parent(client, exp.experiment_id, sweep_id) if exp else None


def adaptive_points(tracking_uri: str, experiment: str, sweep_id: str) -> list[dict]:
    """The points the sweep driver added beyond edge optima (JSON on the sweep's parent run)."""
    parent = _sweep_parent(_client(tracking_uri), experiment, sweep_id)
    return json.loads(parent.data.tags.get(ADAPTIVE_TAG, "[]")) if parent else []


def log_analysis_run(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path,
                     metrics: dict[str, float], tags: dict[str, str], note: str) -> str:
    """Log a finished report (report.md, summary.json, points.csv, figures) as a ``run_kind=analysis``
    run, nested under the sweep's parent run in the UI; returns its run id."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    tags = {RUN_KIND_TAG: ANALYSIS_KIND, SWEEP_ID_TAG: sweep_id, **tags, NOTE_TAG: note}
    parent = _sweep_parent(client, experiment, sweep_id)
    if parent is not None:  # beside the jobs it analysed
        tags[PARENT_TAG] = parent.info.run_id
    # One name per analysis (a sweep is analysed again after each extension): the time it ran plus a
    # short random suffix, so two analyses within one second are still told apart in the UI.
    name = f"analysis-{sweep_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    run_id = client.create_run(exp.experiment_id, run_name=name, tags=tags).info.run_id
    try:
        for key, value in metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, key, float(value))
        for name in ("report.md", "summary.json", "points.csv"):
            if (out_dir / name).exists():
                client.log_artifact(run_id, str(out_dir / name))
        for fig in sorted((out_dir / "figures").glob("*")):
            client.log_artifact(run_id, str(fig), artifact_path="figures")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
