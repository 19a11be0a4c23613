"""MLflow tracking: one run per job, buffered metrics, resume into the same run, sweeps as parent runs.

Everything goes through an explicit `MlflowClient(uri)`, never the global fluent state, so two stores in
one process (tests) cannot leak into each other. The URI is a sqlite store (`tracking=sqlite`, the
default) or an `mlflow server` over HTTP (`tracking=server`, started with `python -m
experiments.mlflow_server`); credentials for a server with basic auth come from the environment
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's client), never from configs.

Nothing that looks like a secret is written: this module is the one secret filter. Params and tags pass
through `redact` (a secret is dropped), run names and dataset inputs through `scrub`, config copies (the
run dir's and MLflow's config.yaml, Hydra's .hydra/ and multirun.yaml, a study's study.yaml) through
`redact_config`, and Hydra's job logs through `RedactingFilter`.
"""

from __future__ import annotations

import json
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

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.config.errors import TrackingError
# The tracking contract shared with analysis/ (stdlib only), re-exported under the old names.
from tracking_contract import (MEMBER_TAG, PARENT_TAG, SWEEP_KIND, check_server, find_sweep_parent,  # noqa: F401
                               is_http, member_filter, member_tag)
from tracking_contract import quote as _quote  # noqa: F401

log = logging.getLogger(__name__)

_MAX_METRICS = 1000  # mlflow's per-batch limits
_MAX_PARAMS = 100
_MAX_PARAM_LEN = 6000

def default_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


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
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?KEY|(?:^|_)KEY(?:_|$)",
                         re.IGNORECASE)
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
    return scrub(str(node), _secrets=_secrets)


def scrub(text: str, environ: Mapping[str, str] | None = None, *, _secrets: list[str] | None = None) -> str:
    """Free text (a log line, an override list, a dataset's description) with every secret in it replaced
    by "***": known token formats, values of secret-looking environment variables, URI passwords, and the
    value of a `key=value` whose key names a credential (`data.hf_token=...`)."""
    if _secrets is None:
        _secrets = _secret_env_values(environ_snapshot() if environ is None else environ)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _SECRET_VALUE.sub(REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}={REDACTED}" if is_secret_key(m["key"]) else m[0], text)
    return _URI_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


_KEY_VALUE = re.compile(r"(?P<key>[A-Za-z_][\w.-]*)=(?P<value>[^\s,'\"\]]+)")


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs every record (Hydra's job logs under outputs/ and multirun/ hold the
    launcher's `#1 : <overrides>` lines). Used by conf/hydra/job_logging/redacted.yaml."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_dataset(item: DatasetInput) -> DatasetInput:
    """A dataset input with its name, source, schema, profile and tags scrubbed: MLflow stores them in its
    `datasets` and `input_tags` tables (data.name=$HF_TOKEN would be stored verbatim)."""
    d = item.dataset
    clean = Dataset(name=scrub(d.name), digest=scrub(d.digest), source_type=d.source_type,
                    source=scrub(d.source), schema=d.schema and scrub(d.schema), profile=d.profile and scrub(d.profile))
    return DatasetInput(clean, tags=[InputTag(t.key, scrub(t.value)) for t in item.tags or []])


# --- the store -----------------------------------------------------------------------------------

def check_sqlite(db: Path) -> None:
    """Raise TrackingError unless a sqlite store can be written at `db` (sqlite would say "unable to open
    database file" or "attempt to write a readonly database" deep inside a migration)."""
    if not db.parent.is_dir():
        raise TrackingError(f"the tracking store's folder {db.parent} does not exist; create it, or set "
                            "tracking.uri=sqlite:///<an existing folder>/mlflow.db (default: <paths.root>/mlflow.db)")
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(f"the tracking store {db} is read-only; make it writable, or point tracking.uri "
                            "at a writable sqlite file, or run with tracking.enabled=false")
    if db.is_dir() or (db.exists() and db.stat().st_size and _header(db) != _SQLITE_HEADER):
        raise TrackingError(f"tracking.uri: {db} is not a sqlite database; point tracking.uri at a sqlite file "
                            "(sqlite:///<folder>/mlflow.db; a missing file is created), or null for <paths.root>/mlflow.db")


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every sqlite database file (an empty file is new)
_USABLE = ("the stores training logs to are sqlite:///<folder>/mlflow.db (tracking=sqlite, the default) and an "
           "MLflow server at http(s)://host:port (tracking=server); set tracking.uri to one, or null for the default")


def _header(db: Path) -> bytes:
    with open(db, "rb") as fh:
        return fh.read(len(_SQLITE_HEADER))


def check_uri(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError (one line, with the fix) unless training can log to `uri`: a sqlite file that is
    (or can become) a database in a writable folder, or an MLflow server. `file://` stores, other schemes
    and an HTTP server that is not MLflow fail here, before anything is written, not inside MLflow."""
    shown = redact_value(uri, {}) or REDACTED
    if is_http(uri):
        check_server(uri, timeout)
        _check_mlflow_api(uri, shown, timeout)
    elif uri.startswith("sqlite:///"):
        check_sqlite(Path(uri[len("sqlite:///"):]))
    else:
        raise TrackingError(f"tracking.uri={shown!r} is not a store training can log to: {_USABLE}")


def _check_mlflow_api(uri: str, shown: str, timeout: float) -> None:
    """An MLflow server answers its REST API in JSON (a 404 for an unknown experiment included); a web server
    that is not MLflow answers with a page or an empty 404. 401/403: a server with auth, left to the client."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=parcae-probe"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(65536)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return
        body = err.read(65536)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise TrackingError(f"the tracking server at {shown} did not answer MLflow's API ({err}); {_USABLE}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ({"error_code", "experiment"} & answer.keys()):
        raise TrackingError(f"{shown} answers, but not as an MLflow tracking server (its REST API is missing); "
                            f"{_USABLE}")


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise first-time creation of a sqlite store across processes: MLflow creates its schema with
    alembic migrations, and two processes migrating one new file at once both fail ("Online migration
    expected to match one row"), e.g. two sweeps started together on a fresh clone. A server needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from experiments.training.run_dir import waiting_lock  # flock, or a lock file where flock is missing

    db = Path(uri[len("sqlite:///"):])
    with waiting_lock(db.with_name(db.name + ".lock")):
        yield


def ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    """Create the store (schema migrations) and the experiment; returns its id.

    Safe to call from many processes at once (a file lock around a sqlite store's creation). Against a
    server, the server owns the store and the artifacts (its --artifacts-destination), so no local
    artifact location is set.
    """
    check_uri(uri)
    with _creation_lock(uri):
        return _ensure_experiment(uri, name, artifact_root)


def _ensure_experiment(uri: str, name: str, artifact_root: Path) -> str:
    if uri == default_uri(artifact_root.parent):  # this project's own sqlite store: its artifacts stay beside it
        from experiments.tracking.relocate import follow_project
        follow_project(artifact_root.parent / "mlflow.db", artifact_root)
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
            self.run_id = self.client.create_run(experiment_id, tags=redact(tags),
                                                 run_name=scrub(run_name) if run_name else run_name).info.run_id
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
        """Send the buffered metrics. A store that vanished or broke mid-run is one TrackingError: the run dir
        holds every metric (metrics.jsonl), and the next start logs what the store lacks (training.record)."""
        try:
            while self._buffer:
                chunk = self._buffer[:_MAX_METRICS]
                self.client.log_batch(self.run_id, metrics=chunk)
                self._buffer = self._buffer[_MAX_METRICS:]
        except Exception as err:  # MlflowException, sqlalchemy's OperationalError, a refused connection
            self._buffer = []
            raise TrackingError(f"the MLflow store could not record run {self.run_id} ({type(err).__name__}: "
                                f"{' '.join(str(err).split())[:160]}); the run dir keeps every metric: repair or "
                                f"restore the store, then rerun the same command (it resumes and logs what the store "
                                f"lacks)") from None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_inputs(self, datasets: list) -> None:
        self.client.log_inputs(self.run_id, datasets=[redact_dataset(d) for d in datasets])

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
