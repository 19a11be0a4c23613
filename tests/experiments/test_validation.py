"""Bad input is answered before any work: one clear error naming the key, exit 2, nothing launched."""

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from experiments.config.errors import ConfigError
from experiments.config.plan import plan
from experiments.config.schema import register
from helpers import REPO, SMALL, pretrain

register()


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("overrides, key", [
    (["model.mean_recurrence=0"], "model.mean_recurrence"),
    (["model.name=nosuchmodel"], "model.name"),
    (["train.tokens=null", "train.flop_budget=1e3"], "train.flop_budget"),
    (["train.tokens=100"], "train.tokens"),
    (["train.flop_budget=1e12"], "train.tokens"),  # both budgets set
    (["train.on_nonfinite=ignore"], "train.on_nonfinite"),
])
def test_plan_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        plan(_compose(*overrides))
    assert err.value.key == key
    assert "Fix:" in str(err.value)


def test_valid_flop_budget_derives_tokens():
    p = plan(_compose("train.tokens=null", "train.flop_budget=1e12", "model.mean_recurrence=4"))
    assert p.steps >= 1
    assert p.tokens == p.steps * 16 * p.model.block_size
    assert p.train_flops <= 1e12 < p.train_flops + 16 * p.model.block_size * p.flops_per_token


def test_cli_single_run_rejects_bad_value_and_creates_nothing(tmp_path):
    r = pretrain(tmp_path, "model.mean_recurrence=0")
    assert r.returncode == 2
    assert "model.mean_recurrence=0" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_cli_unknown_model_group(tmp_path):
    r = pretrain(tmp_path, "model=nosuchmodel")
    assert r.returncode != 0
    assert "model/nosuchmodel" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_sweep_with_one_bad_grid_point_launches_nothing(tmp_path):
    # 1e6 FLOPs buys less than one optimizer step: the whole sweep must stop before any job.
    r = pretrain(tmp_path, "sweep=isoflop", *SMALL, "model.mean_recurrence=1,2",
                 "train.flop_budget=1e6,1e10")
    assert r.returncode == 2, r.stderr
    assert "train.flop_budget=1000000.0" in r.stderr and "nothing was launched" in r.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{tmp_path}/mlflow.db").search_runs(["0"])
