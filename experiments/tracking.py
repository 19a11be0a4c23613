"""MLflow tracking: one run per job, buffered metrics, resume into the same run.

Everything goes through an explicit `MlflowClient(uri)`, never the global fluent state, so two stores in
one process (tests) cannot leak into each other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

_MAX_METRICS = 1000  # mlflow's per-batch limits
_MAX_PARAMS = 100
_MAX_PARAM_LEN = 6000


def default_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    """Create the store (schema migrations) and the experiment; returns its id.

    Must run once in the driver before jobs start: parallel first-time creation of a sqlite store
    races in alembic's migrations and fails.
    """
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_root.mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class RunTracker:
    """A job's MLflow run. Metrics are buffered and sent with log_batch at `flush()`.

    The trainer flushes exactly when it checkpoints, so after a `kill -9` the store holds the metrics
    of the steps the checkpoint holds, and the resumed run logs the rest once.
    """

    def __init__(self, uri: str, experiment_id: str, run_id: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None):
        self.client = MlflowClient(uri)
        self._buffer: list[Metric] = []
        if run_id is None:
            self.run_id = self.client.create_run(experiment_id, tags=dict(tags or {}), run_name=run_name).info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:_MAX_METRICS], self._buffer[_MAX_METRICS:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        """status: FINISHED, FAILED or KILLED. Always flushes first."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)
