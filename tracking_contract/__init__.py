"""The tracking contract between the side that trains (experiments/) and the side that reads (analysis/).

Standard library only, so the torch-free analysis never needs Hydra or torch to agree with training on
what a run is called: tag names and kinds, how a value is quoted inside an MLflow filter string, how a
sweep's parent run is found, when a URI is a server and whether one answers, and the error that says
the store cannot be used. Both sides import it; neither keeps its own copy.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

# --- tags a run carries ---------------------------------------------------------------------------
RUN_KIND_TAG = "run_kind"
SWEEP_ID_TAG = "sweep_id"
CONFIG_HASH_TAG = "config_hash"
DIVERGED_TAG = "diverged"          # only the literal value "true" marks divergence
PARENT_TAG = "mlflow.parentRunId"  # nests a run under its sweep's parent in the MLflow UI
NOTE_TAG = "mlflow.note.content"   # a run's description in the MLflow UI

PRETRAIN_KIND = "pretrain"
FINETUNE_KIND = "finetune"
SWEEP_KIND = "sweep"
ANALYSIS_KIND = "analysis"

# A run belongs to every sweep whose grid holds its identity, whoever trained it: one tag per sweep
# (`sweep.member.<sweep_id>` = "true"), next to the `sweep_id` tag of the sweep that trained it.
MEMBER_TAG = "sweep.member.{}"
ADAPTIVE_TAG = "sweep.adaptive"    # on the sweep's parent: JSON list of the points bracketing added

# Cooldown branches (sweep.branching=true): a branch run names the trunk it was cut from and where.
BRANCH_TRUNK_TAG = "branch.trunk"          # the trunk's hash (its run dir: runs/trunk-<hash>/)
BRANCH_FROM_STEP_TAG = "branch.from_step"  # the trunk step the branch's cooldown starts at
BRANCH_FROM_TOKENS_TAG = "branch.from_tokens"  # the same, in training tokens
# Seeds as an axis (sweep.seeds=K): replicates of one grid point differ only in train.seed (the run param
# `train.seed`); `replicate_of` is the hash of the point's config without its seed, shared by the replicates.
REPLICATE_TAG = "replicate_of"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (e.g. no server at the URI); the message says what to do."""


def quote(value: str) -> str:
    """A value as it goes between single quotes in an MLflow filter string."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def member_tag(sweep_id: str) -> str:
    return MEMBER_TAG.format(sweep_id)


def member_filter(sweep_id: str) -> str:
    """The search_runs filter of a sweep's members (keys with dots are quoted with backticks)."""
    return f"tags.`{member_tag(sweep_id)}` = 'true'"


def sweep_filter(sweep_id: str, run_kind: str | None = None) -> str:
    """The search_runs filter of the runs tagged with `sweep_id` (of one kind when given)."""
    text = f"tags.{SWEEP_ID_TAG} = '{quote(sweep_id)}'"
    return text + (f" and tags.{RUN_KIND_TAG} = '{quote(run_kind)}'" if run_kind else "")


def find_sweep_parent(client, experiment_id: str, sweep_id: str):
    """The sweep's parent run (the oldest, should two drivers have raced), or None.

    client: an mlflow MlflowClient (duck-typed: this module imports no mlflow)."""
    found = client.search_runs([experiment_id], sweep_filter(sweep_id, SWEEP_KIND),
                               order_by=["attributes.start_time ASC"], max_results=1)
    return found[0] if found else None


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _shown(uri: str) -> str:
    """The URI without any user:password part, as it may appear in a message."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an MLflow server answers at `uri` (its unauthenticated /health).

    MLflow's own client retries for minutes before it gives up; this fails in seconds with the fix."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers (e.g. 401 behind a proxy): let the client report the details
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise TrackingError(
            f"no MLflow server answers at {_shown(uri)} ({getattr(err, 'reason', err)}). Start one with "
            f"`python -m experiments.mlflow_server --port {urlsplit(uri).port or 5000}` (or `make mlflow-server`), "
            f"or set tracking.uri=..., or use tracking=sqlite") from None
