"""Optuna tuning: a real study with two worker processes sharing a journal file, pruning, MLflow runs."""

import json
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from experiments.launch.sweep_status import process_alive
from experiments.launch import tune
from experiments.training.run_dir import read_status

from helpers import REPO

TINY = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.tokens=15360",  # 30 steps
        "train.eval_every=5", "train.checkpoint_every=10", "train.test_loops=[1,2]", "train.threads=1"]
LOW, HIGH = 3e-4, 3e-2  # conf/tune/lr.yaml


def _runs(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("parcae")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.timeout(180)
def test_study_with_two_workers_shares_the_journal_prunes_and_tracks(tmp_path):
    cmd = [sys.executable, "-m", "experiments.tune", f"paths.root={tmp_path}", *TINY, "tune=lr",
           "tune.n_trials=5", "tune.workers=2", "tune.pruner.n_startup_trials=2", "tune.sampler.seed=0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best trial" in proc.stdout and "optuna-dashboard" in proc.stdout

    journals = list((tmp_path / "tune").glob("*/journal.log"))
    assert len(journals) == 1
    name = journals[0].parent.name
    study = optuna.load_study(study_name=name, storage=tune.storage(journals[0]))
    trials = study.get_trials()
    assert len(trials) == 5
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.COMPLETE for t in trials)
    assert LOW <= study.best_params["train.lr"] <= HIGH
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both workers ran trials

    runs = {r.data.tags["optuna.trial"]: r for r in _runs(tmp_path)}
    assert len(runs) == 5 and set(runs) == {str(t.number) for t in trials}
    for t in trials:
        run = runs[str(t.number)]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["sweep_id"] == name
        assert run.data.tags["optuna.state"] == t.state.name
        status = read_status(t.user_attrs["run_dir"])
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and status["status"] == "finished"
        else:  # pruned: never left RUNNING, never marked finished
            assert run.info.status == "FAILED" and status["status"] == "failed"
            assert status["optuna"]["state"] == "PRUNED" and run.data.tags["pruned"] == "true"
    summary = json.loads((journals[0].parent / "summary.json").read_text())
    assert summary["best"]["number"] == study.best_trial.number


@pytest.mark.parametrize("override, key", [
    ("tune.space.train.lr.low=0", "tune.space.train.lr"),
    ("+tune.space.train.nope={type:float,low:0,high:1}", "tune.space.train.nope"),
    ("+tune.space.model.mean_recurrence={type:categorical,choices:[0,2]}", "tune.space.model.mean_recurrence"),
    ("tune.launcher=cloud", "tune.launcher"),
    ("train.tokens=1", "train.tokens"),
])
def test_a_bad_config_or_search_space_starts_nothing(tmp_path, capsys, override, key):
    assert tune.main([f"paths.root={tmp_path}", "tune=lr", override]) == 2
    assert f"config error: {key}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _base_and_tune(tmp_path, *overrides):
    tune.register_tune()
    base, t, _ = tune._compose([f"paths.root={tmp_path}", *TINY, *overrides])
    return base, t


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruned_trial_is_tagged_and_its_run_is_not_finished(tmp_path):
    base, t = _base_and_tune(tmp_path, "tune=lr")
    space = tune.validate(base, t)
    study = optuna.create_study(study_name="prune-me", pruner=_AlwaysPrune())
    study.optimize(tune.make_objective(base, space, "prune-me"), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [5]
    status = read_status(trial.user_attrs["run_dir"])
    assert status["status"] == "failed" and status["optuna"] == {"study": "prune-me", "trial": 0, "state": "PRUNED"}
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "PRUNED"
    assert OmegaConf.load(f"{trial.user_attrs['run_dir']}/config.yaml").sweep_id == "prune-me"


def test_a_trial_left_running_by_a_dead_worker_is_retried_with_its_parameters(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = tune.storage(tmp_path / "journal.log")
    study = optuna.create_study(study_name="s", storage=store)
    orphan = study.ask({"train.lr": optuna.distributions.FloatDistribution(LOW, HIGH, log=True)})
    orphan.set_user_attr("worker", {"host": "h", "pid": dead.pid, "slurm_job": None})
    alive = study.ask({"train.lr": optuna.distributions.FloatDistribution(LOW, HIGH, log=True)})
    alive.set_user_attr("worker", {"host": "h", "pid": 1, "slurm_job": None})

    n = tune.retry_stale(study, store, lambda w: w.get("host") == "h" and not process_alive(w["pid"]))
    assert n == 1
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.get_trials()[2].system_attrs["fixed_params"] == {"train.lr": orphan.params["train.lr"]}


def test_slurm_launcher_submits_one_array_task_per_worker(tmp_path, monkeypatch):
    import submitit

    seen = {}

    class Job:
        def __init__(self, i):
            self.job_id = f"42_{i}"

        def result(self):
            return {}

    class Executor:
        def __init__(self, folder, cluster, **kw):
            seen.update(folder=folder, cluster=cluster, ctor=kw)

        def update_parameters(self, **kw):
            seen["params"] = kw

        def map_array(self, fn, *args):
            seen.update(fn=fn, args=args)
            return [Job(i) for i in range(len(args[0]))]

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    _, t = _base_and_tune(tmp_path, "tune=lr", "tune.launcher=slurm", "tune.slurm.partition=cpu",
                          "+tune.slurm.additional.qos=short")
    codes = tune._launch_slurm({"b": 1}, {"t": 1}, [3, 2], tmp_path, "study", t.slurm)
    assert codes == [0, 0]
    assert seen["cluster"] == "slurm" and seen["folder"].startswith(str(tmp_path / "submitit"))
    assert seen["ctor"] == {"slurm_max_num_timeout": 3}
    assert seen["params"]["slurm_partition"] == "cpu" and seen["params"]["slurm_additional_parameters"] == {"qos": "short"}
    assert seen["fn"] is tune.worker and seen["args"][2] == [3, 2] and seen["args"][3] == [0, 1]
