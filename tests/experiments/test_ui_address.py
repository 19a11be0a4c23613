"""What `make ui` opens on, on a real store of two tiny sweeps (scripts/ui/check.py trains them): the latest
sweep's (or SWEEP=) saved MLflow view — its runs only, by name, eval/loss, µ_rec, budget and tokens as
columns, its charts first — and the sweep's static page. The rendered pages themselves are checked in a
real chromium by `make test-ui` (the same script)."""

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "ui"))
from check import expected, sweep_store  # noqa: E402
from serve import runs_url, training_kind  # noqa: E402
from sweep_page import write_page  # noqa: E402
from sweep_view import COLUMNS, SHARE_TAG  # noqa: E402

pytestmark = pytest.mark.slow  # minutes of training: CI's `make test-slow`, not `make test`

SERVE = [sys.executable, str(REPO / "scripts" / "ui" / "serve.py")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    return root, sweep_store(root)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(urlsplit(url).fragment).query).items()}


def _serve(uri: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SERVE, "--tracking-uri", uri, *args], capture_output=True, text=True)


def test_the_address_opens_the_latest_sweeps_view_with_its_columns_and_charts(store):
    _, uri = store
    q = _query(_serve(uri, "--print-url").stdout.strip())
    assert q == {"workflowType": "machine_learning", "viewStateShareKey": "sweep-uib"}
    assert _query(_serve(uri, "--print-compare-url").stdout.strip())["compareRunsMode"] == "CHART"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parcae")
    view = json.loads(exp.tags[SHARE_TAG + q["viewStateShareKey"]])
    assert view["selectedColumns"] == list(COLUMNS) and view["runsHiddenMode"] == "SHOW_ALL"
    charts = view["compareRunCharts"]
    assert (charts[0]["xaxis"]["key"], charts[0]["yaxis"]["key"]) == ("mu_rec", "eval/loss")
    assert charts[1]["metricKey"] == "eval/loss_vs_T"
    # the view's filter is one MLflow accepts, and finds exactly the latest sweep's runs
    found = client.search_runs([exp.experiment_id], view["searchFilter"])
    sweep, runs, others = expected(uri, "parcae", None)
    assert sweep == "uib" and sorted(r.info.run_name for r in found) == sorted(runs)
    assert len(runs) == 2 and len(others) == 2 and all(n.startswith("uia/") for n in others)
    for r in found:  # every column the view shows has its value
        assert {"eval/loss", "mu_rec", "flop_budget", "train_tokens"} <= r.data.metrics.keys()
        assert {"mu_rec", "budget", "tokens"} <= r.data.tags.keys()
        assert [p.step for p in client.get_metric_history(r.info.run_id, "eval/loss_vs_T")][:2] == [1, 2]


def test_sweep_chooses_another_sweep_and_an_unknown_one_is_one_line(store):
    _, uri = store
    assert _query(_serve(uri, "--print-url", "--sweep", "uia").stdout)["viewStateShareKey"] == "sweep-uia"
    bad = _serve(uri, "--print-url", "--sweep", "nope")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "config error: SWEEP='nope': no runs of that sweep in the store. Fix: use one of uia, uib."]


def test_static_page_has_every_run_and_the_two_charts(store, tmp_path):
    _, uri = store
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("parcae").experiment_id
    page = write_page(client, exp_id, "uib", tmp_path / "reports")
    text = page.read_text()
    assert page == tmp_path / "reports" / "uib" / "ui.html"
    _, runs, others = expected(uri, "parcae", "uib")
    assert all(f"<td>{n}</td>" in text for n in runs) and not any(n in text for n in others)
    assert text.index("ui/loss_vs_mu.png") < text.index("ui/loss_vs_T.png") < text.index('<table id="runs">')
    assert all((page.parent / "ui" / f).stat().st_size > 1000 for f in ("loss_vs_mu.png", "loss_vs_T.png"))


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
    out = _serve(uri, "--experiment", "flow", "--print-url").stdout  # no sweep: the training runs
    assert _query(out)["searchFilter"] == "tags.run_kind = 'finetune'"
