"""Non-finite losses are handled as configured, with a real divergence (an absurd learning rate):
`stop` ends the run as diverged; `skip` skips the steps and, if the model never recovers, the run
still ends diverged. Either way nothing is left RUNNING and the run is tagged for analysis to drop."""

import json

import pytest
from mlflow.tracking import MlflowClient

from helpers import SMALL, pretrain


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_divergence_is_recorded_not_hidden(tmp_path, policy):
    r = pretrain(tmp_path, *SMALL, "train.tokens=10240", "train.lr=1e30", "train.warmup_fraction=0",
                 f"train.on_nonfinite={policy}", "sweep_id=guard")
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "diverged"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("parcae").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["diverged"] == "true"
    if policy == "skip":
        assert run.data.metrics["train/skipped_steps"] > 0
