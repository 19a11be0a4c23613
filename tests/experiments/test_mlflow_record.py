"""What a training run leaves in MLflow for a person in the UI (issue: runs easy to find and compare):
a name with the grid point's values, numeric search fields, no `None` params, loss against T as one
metric with step = T, the corpus as a dataset input, git source tags, system metrics, the model artifacts.
One real two-point sweep of tiny runs, read back through MLflow's client."""

import re

import pytest
from mlflow.tracking import MlflowClient

from experiments.config.naming import compact, point_label, run_name
from experiments.tracking import describe
from experiments.tracking import store as tracking
from helpers import SMALL, pretrain

GRID = [*SMALL, "model=tiny", "model.mean_recurrence=2", "train.tokens=5120", "train.test_loops=[1,2,3]",
        "tracking.system_metrics_interval_s=0.2", "sweep_id=demo"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    r = pretrain(root, "-m", *GRID, "train.lr=1e-3,2e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking.default_uri(root))
    exp = client.get_experiment_by_name("parcae").experiment_id
    runs = client.search_runs([exp], "tags.run_kind = 'pretrain'")
    assert len(runs) == 2
    return client, exp, runs


def test_run_names_carry_the_grid_values(sweep):
    _, _, runs = sweep
    assert sorted(r.info.run_name for r in runs) == ["demo/mu2-D5120-lr0.001", "demo/mu2-D5120-lr0.002"]


def test_numeric_search_and_no_none_params(sweep):
    client, exp, runs = sweep
    found = client.search_runs([exp], "metrics.mu_rec = 2 and metrics.train_tokens >= 5000")
    assert len(found) == 2
    assert client.search_runs([exp], "metrics.mu_rec > 2") == []
    for r in runs:
        assert r.data.tags["mu_rec"] == "2" and r.data.tags["tokens"] == "5120"
        assert "None" not in r.data.params.values(), [k for k, v in r.data.params.items() if v == "None"]
        assert "train.flop_budget" not in r.data.params  # null: left out, not logged as 'None'


def test_loss_against_T_is_one_metric_with_step_T(sweep):
    client, _, runs = sweep
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "eval/loss_vs_T")
        assert sorted(m.step for m in history) == [1, 2, 3]
        by_T = {m.step: m.value for m in history}
        for T in (1, 2, 3):
            assert by_T[T] == pytest.approx(r.data.metrics[f"eval/loss_T{T}"])


def test_dataset_source_system_metrics_and_model(sweep):
    client, _, runs = sweep
    for r in runs:
        full = client.get_run(r.info.run_id)
        (ds,) = full.inputs.dataset_inputs
        assert ds.dataset.name == "stdlib" and ds.dataset.digest and ds.tags[0].value == "training"
        assert re.fullmatch(r"[0-9a-f]{40}", full.data.tags["mlflow.source.git.commit"])
        assert any(k.startswith("system/cpu_utilization") for k in full.data.metrics), list(full.data.metrics)
        names = {a.path for a in client.list_artifacts(r.info.run_id, "model")}
        assert names == {"model/checkpoint.pt", "model/config.yaml", "model/tokenizer.json"}


def test_names_and_fields_for_budgeted_points():
    cfg = {"sweep_id": "isoflop", "model": {"mean_recurrence": 4}, "train": {"flop_budget": 2e12, "tokens": None}}
    assert run_name(cfg) == "isoflop/mu4-C2e12"
    assert point_label(cfg, ["model.mean_recurrence", "train.flop_budget"]) == "mu4-C2e12"
    assert compact(1.2e13) == "1.2e13" and compact(3e-3) == "0.003" and compact(128) == "128"
    metrics, tags = describe.search_fields(4, 2e12, 10**6, 76288)
    assert metrics["flop_budget"] == 2e12 and tags["budget"] == "2e12" and tags["mu_rec"] == "4"
    assert describe.testtime_curve({"eval/loss": 1.0, "eval/loss_T2": 1.5, "eval/bpb_T2": 2.0}) == \
        {2: {"eval/loss_vs_T": 1.5, "eval/bpb_vs_T": 2.0}}
