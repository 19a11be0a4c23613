"""The address `make ui` prints: the experiment's training runs, flat and sorted by name (MLflow nests a
sweep's runs, collapsed, under its parent unless the table is filtered and sorted by something other than
date). The rendered page itself is checked in a real chromium by `make test-ui` (scripts/ui/check.py)."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "ui"))
from check import RUN_NAMES, tiny_store  # noqa: E402
from serve import latest_sweep_runs, runs_url, training_kind  # noqa: E402


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(urlsplit(url).fragment).query).items()}


def test_the_address_filters_on_the_training_runs_sorted_by_name(tmp_path):
    uri = tiny_store(tmp_path, "parcae")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "ui" / "serve.py"), "--tracking-uri", uri,
                          "--print-url"], capture_output=True, text=True, check=True).stdout.strip()
    q = _query(out)
    assert q == {"workflowType": "machine_learning", "searchFilter": "tags.run_kind = 'pretrain'",
                 "orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true"}
    exp_id = MlflowClient(uri).get_experiment_by_name("parcae").experiment_id
    # the filter is one MLflow accepts: it finds the training runs and not their sweep
    found = MlflowClient(uri).search_runs([exp_id], q["searchFilter"])
    assert sorted(r.info.run_name for r in found) == sorted(RUN_NAMES)
    sweep_id, _, names = latest_sweep_runs(uri, exp_id)
    assert sweep_id == "isoflop" and sorted(names) == sorted(RUN_NAMES)


def test_finetune_experiments_and_empty_ones(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    empty = client.create_experiment("empty", artifact_location=str(tmp_path / "a"))
    flow = client.create_experiment("flow", artifact_location=str(tmp_path / "b"))
    client.create_run(flow, run_name="flow/tau-median", tags={"run_kind": "finetune"})
    assert training_kind(uri, empty) is None
    assert "searchFilter" not in _query(runs_url("127.0.0.1", 5000, empty, None))
    assert training_kind(uri, flow) == "finetune"
    assert _query(runs_url("127.0.0.1", 5000, flow, "finetune"))["searchFilter"] == "tags.run_kind = 'finetune'"
