"""MLflow tracking: one run per job, buffered metrics, resume into the same run, sweeps as parent runs.

Everything goes through an explicit `MlflowClient(uri)`, never the global fluent state, so two stores in
one process (tests) cannot leak into each other. The URI is a sqlite store (`tracking=sqlite`, the
default) or an `mlflow server` over HTTP (`tracking=server`, started with `python -m
experiments.mlflow_server`); credentials for a server with basic auth come from the environment
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's client), never from configs.

Nothing that looks like a secret reaches MLflow: params and tags pass through `redact` first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.config.errors import TrackingError

log = logging.getLogger(__name__)

_MAX_METRICS = 1000  # mlflow's per-batch limits
_MAX_PARAMS = 100
_MAX_PARAM_LEN = 6000

PARENT_TAG = "mlflow.parentRunId"
SWEEP_KIND = "sweep"
# A run belongs to every sweep whose grid holds its identity, whoever trained it: one tag per sweep
# (`sweep.member.<sweep_id>` = "true"), next to the `sweep_id` tag of the sweep that trained it.
MEMBER_TAG = "sweep.member.{}"


def member_tag(sweep_id: str) -> str:
    return MEMBER_TAG.format(sweep_id)


def member_filter(sweep_id: str) -> str:
    """The search_runs filter of a sweep's members (keys with dots are quoted with backticks)."""
    return f"tags.`{member_tag(sweep_id)}` = 'true'"


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


def environ_snapshot() -> dict[str, str]:
    """A copy of os.environ taken once. Other threads change the environment while we read it (MLflow's
    telemetry thread sets and deletes _MLFLOW_TELEMETRY_SESSION_ID), and copying iterates the keys and
    then reads each value, so a copy that raced is simply taken again."""
    for _ in range(10):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):
            continue
    return dict(os.environ)


def _secret_env_values(environ: Mapping[str, str]) -> list[str]:
    return [v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= 6]


def redact_value(value: str, environ: Mapping[str, str] | None = None, *,
                 _secrets: list[str] | None = None) -> str | None:
    """The value with URI passwords masked, or None when it is (or holds) a secret."""
    if _secrets is None:
        _secrets = _secret_env_values(environ_snapshot() if environ is None else environ)
    if _SECRET_VALUE.search(value) or any(s in value for s in _secrets):
        return None
    return _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def redact(items: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Params or tags as strings, minus every key that names a credential and every value that is one
    (a known token format, or the value of a secret-looking environment variable such as HF_TOKEN);
    passwords inside URIs are masked. Dropped keys are logged by name, never by value."""
    secrets = _secret_env_values(environ_snapshot() if environ is None else environ)  # one snapshot per call
    out, dropped = {}, []
    for key, value in items.items():
        clean = None if is_secret_key(key) else redact_value(str(value), _secrets=secrets)
        if clean is None:
            dropped.append(key)
        else:
            out[key] = clean
    if dropped:
        log.warning("not logging %d secret-looking value(s) to MLflow: %s", len(dropped), ", ".join(sorted(dropped)))
    return out


def redact_config(node: Any, environ: Mapping[str, str] | None = None, _path: str = "",
                  _secrets: list[str] | None = None) -> Any:
    """A plain config container with the same filter as params: a secret-looking key or value becomes
    "***", URI passwords are masked. For the config.yaml artifact and the run dir's copy."""
    if _secrets is None:
        _secrets = _secret_env_values(environ_snapshot() if environ is None else environ)
    if isinstance(node, Mapping):
        return {k: redact_config(v, environ, f"{_path}.{k}" if _path else str(k), _secrets) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [redact_config(v, environ, _path, _secrets) for v in node]
    if node is None or isinstance(node, (bool, int, float)):
        return REDACTED if _path and is_secret_key(_path) and node is not None else node
    if is_secret_key(_path):
        return REDACTED
    clean = redact_value(str(node), _secrets=_secrets)
    return REDACTED if clean is None else clean


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


def check_sqlite(db: Path) -> None:
    """Raise TrackingError unless a sqlite store can be written at `db` (sqlite would say "unable to open
    database file" or "attempt to write a readonly database" deep inside a migration)."""
    if not db.parent.is_dir():
        raise TrackingError(f"the tracking store's folder {db.parent} does not exist; create it, or set "
                            "tracking.uri=sqlite:///<an existing folder>/mlflow.db (default: <paths.root>/mlflow.db)")
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(f"the tracking store {db} is read-only; make it writable, or point tracking.uri "
                            "at a writable sqlite file, or run with tracking.enabled=false")


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise first-time creation of a sqlite store across processes: MLflow creates its schema with
    alembic migrations, and two processes migrating one new file at once both fail ("Online migration
    expected to match one row"), e.g. two sweeps started together on a fresh clone. A server needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    """Create the store (schema migrations) and the experiment; returns its id.

    Safe to call from many processes at once (a file lock around a sqlite store's creation). Against a
    server, the server owns the store and the artifacts (its --artifacts-destination), so no local
    artifact location is set.
    """
    if is_http(uri):
        check_server(uri)
    elif uri.startswith("sqlite:///"):
        check_sqlite(Path(uri[len("sqlite:///"):]))
    with _creation_lock(uri):
        return _ensure_experiment(uri, name, artifact_root)


def _ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
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
    found = find_sweep_parent(client, experiment_id, sweep_id)
    extra = redact(dict(tags or {}))
    if found:
        run_id = found.info.run_id
        client.update_run(run_id, status="RUNNING")
        if extra:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in extra.items()])
        return run_id
    base = {"sweep_id": sweep_id, "run_kind": SWEEP_KIND}
    return client.create_run(experiment_id, tags={**extra, **base}, run_name=f"sweep-{sweep_id}").info.run_id


def find_sweep_parent(client: MlflowClient, experiment_id: str, sweep_id: str):
    """The sweep's parent run (the oldest, should two drivers have raced), or None."""
    found = client.search_runs([experiment_id], f"tags.sweep_id = '{_quote(sweep_id)}' and tags.run_kind = '{SWEEP_KIND}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    return found[0] if found else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def find_run(client: MlflowClient, experiment_id: str, run_id: str | None, config_hash: str,
             run_kind: str) -> str | None:
    """The one MLflow run of an identity: the recorded id if the store still has it, else the oldest live
    run tagged with this config_hash and run_kind (status.json deleted), else None (never tracked, or
    the store lost it)."""
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage != "deleted":
                return run_id
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code) and "not found" not in str(err):
                raise
    found = client.search_runs([experiment_id], f"tags.config_hash = '{_quote(config_hash)}' and "
                               f"tags.run_kind = '{_quote(run_kind)}'", order_by=["attributes.start_time ASC"],
                               max_results=1)
    return found[0].info.run_id if found else None


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
                 parent_run_id: str | None = None, resume: bool = True):
        self.client = MlflowClient(uri)
        self._buffer: list[Metric] = []
        tags = dict(tags or {})
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        if run_id is None:
            self.run_id = self.client.create_run(experiment_id, tags=redact(tags), run_name=run_name).info.run_id
        else:
            self.run_id = run_id
            if resume:  # not for a finished run that is only tagged (e.g. as a member of another sweep)
                self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        given = {k: v for k, v in params.items() if v is not None}  # None is "not set": noise in the UI
        items = [Param(k, v[:_MAX_PARAM_LEN]) for k, v in redact(given).items() if k not in existing]
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

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_inputs(self, datasets: list) -> None:
        self.client.log_inputs(self.run_id, datasets=datasets)

    def finish(self, status: str) -> None:
        """status: FINISHED, FAILED or KILLED. Always flushes first."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)


REPO = Path(__file__).resolve().parents[2]


def git_output(*args: str, repo: Path | None = None) -> str:
    """`git <args>` in the repository (stripped stdout), or "" when git or the repository is missing."""
    try:
        return subprocess.run(["git", *args], cwd=repo or REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version(repo: Path | None = None) -> str:
    """The git commit of the code that runs (with '+dirty' for uncommitted changes), or 'unknown'.

    Not part of a run's identity (a refactor must not retrain every run), but recorded so that a
    result can be traced to the code that produced it."""
    sha = git_output("rev-parse", "HEAD", repo=repo)
    if not sha:
        return "unknown"
    dirty = git_output("status", "--porcelain", "--untracked-files=no", repo=repo)
    return f"{sha}+dirty" if dirty else sha
