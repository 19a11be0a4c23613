"""MLflow tracking: one run per job, buffered metrics, resume into the same run, sweeps as parent runs.

Everything goes through an explicit `MlflowClient(uri)`, never the global fluent state, so two stores in
one process (tests) cannot leak into each other. The URI is a sqlite store (`tracking=sqlite`, the
default) or an `mlflow server` over HTTP (`tracking=server`, started with `python -m
experiments.mlflow_server`); credentials for a server with basic auth come from the environment
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's client), never from configs.

Nothing that looks like a secret reaches MLflow: params and tags pass through `redact` first.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from experiments.config.errors import TrackingError

log = logging.getLogger(__name__)

_MAX_METRICS = 1000  # mlflow's per-batch limits
_MAX_PARAMS = 100
_MAX_PARAM_LEN = 6000

PARENT_TAG = "mlflow.parentRunId"
SWEEP_KIND = "sweep"


def default_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# --- secrets never reach MLflow ------------------------------------------------------------------

# A key component (between dots) that names a credential. `token` only alone or with a credential
# prefix, so that train.tokens or derived.flops_per_token stay.
_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|secret|credential|api_?key|access_?key|private_?key"
    r"|^(?:token|auth|authorization|cookie|session)$"
    r"|(?:^|_)(?:access|auth|api|bearer|refresh|id|session|oauth|hf|hub|github|gh|gitlab|wandb|mlflow"
    r"|tracking|slack|openai|aws|gcp|azure)_?token$",
    re.IGNORECASE)
# Values that are credentials whatever their key: well-known token formats and PEM keys.
_SECRET_VALUE = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9_-]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bey[A-Za-z0-9_-]{10,}\.ey[A-Za-z0-9_-]{10,}\."
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Environment variables whose values must never appear in a logged value (HF_TOKEN, the tracking
# password, AWS_SECRET_ACCESS_KEY, ...).
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?KEY", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
REDACTED = "***"


def is_secret_key(key: str) -> bool:
    return any(_SECRET_KEY.search(part) for part in re.split(r"[./]", key))


def _secret_env_values(environ: Mapping[str, str]) -> list[str]:
    return [v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= 6]


def redact_value(value: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value with URI passwords masked, or None when it is (or holds) a secret."""
    environ = os.environ if environ is None else environ
    if _SECRET_VALUE.search(value) or any(s in value for s in _secret_env_values(environ)):
        return None
    return _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def redact(items: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Params or tags as strings, minus every key that names a credential and every value that is one
    (a known token format, or the value of a secret-looking environment variable such as HF_TOKEN);
    passwords inside URIs are masked. Dropped keys are logged by name, never by value."""
    out, dropped = {}, []
    for key, value in items.items():
        clean = None if is_secret_key(key) else redact_value(str(value), environ)
        if clean is None:
            dropped.append(key)
        else:
            out[key] = clean
    if dropped:
        log.warning("not logging %d secret-looking value(s) to MLflow: %s", len(dropped), ", ".join(sorted(dropped)))
    return out


# --- the store -----------------------------------------------------------------------------------

def check_server(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an MLflow server answers at `uri` (its unauthenticated /health).

    MLflow's own client retries for minutes before it gives up; this fails in seconds with the fix."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers (e.g. 401 behind a proxy): let the client report the details
    except (urllib.error.URLError, OSError) as err:
        shown = redact_value(uri, {}) or REDACTED
        raise TrackingError(
            f"no MLflow server answers at {shown} ({getattr(err, 'reason', err)}). Start one with "
            f"`python -m experiments.mlflow_server --port {urlsplit(uri).port or 5000}` (or `make mlflow-server`), "
            f"or set tracking.uri=..., or use tracking=sqlite") from None


def ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    """Create the store (schema migrations) and the experiment; returns its id.

    Must run once in the driver before jobs start: parallel first-time creation of a sqlite store
    races in alembic's migrations and fails. Against a server, the server owns the store and the
    artifacts (its --artifacts-destination), so no local artifact location is set.
    """
    if is_http(uri):
        check_server(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not is_http(uri):
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def sweep_parent_run(uri: str, experiment_id: str, sweep_id: str,
                     tags: Mapping[str, str] | None = None) -> str:
    """The parent run of a sweep: the existing one tagged (sweep_id, run_kind=sweep), else a new one.

    Re-running a sweep reuses its parent (the oldest, should two drivers have raced), so all of a
    sweep's jobs, resumed or not, hang under one run. The parent is marked RUNNING again."""
    client = MlflowClient(uri)
    sweep = sweep_id.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep}' and tags.run_kind = '{SWEEP_KIND}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    extra = redact(dict(tags or {}))
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if extra:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in extra.items()])
        return run_id
    base = {"sweep_id": sweep_id, "run_kind": SWEEP_KIND}
    return client.create_run(experiment_id, tags={**extra, **base}, run_name=f"sweep-{sweep_id}").info.run_id


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(uri).set_terminated(run_id, status=status)


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
    of the steps the checkpoint holds, and the resumed run logs the rest once. `parent_run_id` makes
    the run a child of a sweep's parent run (the `mlflow.parentRunId` tag); a resumed run keeps its id.
    """

    def __init__(self, uri: str, experiment_id: str, run_id: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None):
        self.client = MlflowClient(uri)
        self._buffer: list[Metric] = []
        tags = dict(tags or {})
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        if run_id is None:
            self.run_id = self.client.create_run(experiment_id, tags=redact(tags), run_name=run_name).info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, v[:_MAX_PARAM_LEN]) for k, v in redact(params).items() if k not in existing]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, v) for k, v in redact(tags).items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, tags=items[i:i + _MAX_PARAMS])

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


def code_version(repo: Path | None = None) -> str:
    """The git commit of the code that runs (with '+dirty' for uncommitted changes), or 'unknown'.

    Not part of a run's identity (a refactor must not retrain every run), but recorded so that a
    result can be traced to the code that produced it."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha
