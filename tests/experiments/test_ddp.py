"""Data-parallel training reproduces single-process training: 2 gloo processes under torchrun, and
gradient accumulation in one process, give the 1-process loss curve up to float rounding."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from experiments.config import launch_env as launch
from experiments.training import distributed
from experiments.config.errors import ConfigError
from experiments.config.plan import plan
from experiments.config.schema import register
from experiments.training.trainer import batch_split
from helpers import REPO, SMALL, pretrain

register()

# 20 steps of 8 sequences at mean recurrence 4: per-sequence Poisson depths and random h_0 differ row by
# row, so the global batch's draws must reach the right rows of the right rank.
RUN = [*SMALL, "model.mean_recurrence=4", "train.tokens=10240", "train.test_loops=[1,2]", "sweep_id=ddp"]
RTOL = 1e-4
COMPARED = ("train/loss", "train/grad_norm", "val/loss", "eval/loss", "eval/loss_T1", "eval/loss_T2")


def _metrics(root):
    (run_dir,) = list((root / "runs").iterdir())
    return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _max_rel_diff(ref, other):
    assert [(r["step"], sorted(r)) for r in ref] == [(o["step"], sorted(o)) for o in other]  # same lines, same keys
    worst = 0.0
    for r, o in zip(ref, other):
        for key in COMPARED:
            if key in r:
                worst = max(worst, abs(r[key] - o[key]) / max(abs(r[key]), 1e-12))
    return worst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    r = pretrain(root, *RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    return _metrics(root)


def test_two_processes_reproduce_the_single_process_curve(tmp_path, reference):
    ref_dir, ref = reference
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "experiments.pretrain", f"paths.root={tmp_path}", *RUN]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distributed: 2 processes" in r.stdout + r.stderr
    run_dir, ddp = _metrics(tmp_path)
    assert run_dir.name == ref_dir.name  # the world size is not part of the run's identity
    worst = _max_rel_diff(ref, ddp)  # also: rank 0 alone wrote metrics (no line twice)
    print(f"2-process DDP vs 1 process: max relative difference {worst:.3g}")
    assert worst <= RTOL
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    # Rank 0's checkpoint is the plain model's (no DDP "module." prefix): a 1-process run can resume it.
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20 and not any(k.startswith("module.") for k in state["model"])
    # Rank 0 alone tracks: one MLflow run, finished.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("parcae").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_gradient_accumulation_reproduces_the_curve(tmp_path, reference):
    _, ref = reference
    r = pretrain(tmp_path, *RUN, "train.micro_batch_size=2")  # 4 micro-batches of 2 per step
    assert r.returncode == 0, r.stderr[-3000:]
    _, accumulated = _metrics(tmp_path)
    worst = _max_rel_diff(ref, accumulated)
    print(f"micro_batch_size=2 vs 8: max relative difference {worst:.3g}")
    assert worst <= RTOL


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_batch_split_names_the_key():
    assert batch_split(8, None, 1) == (8, 8)
    assert batch_split(8, None, 2) == (4, 4)
    assert batch_split(8, 2, 2) == (4, 2)
    for micro, world in [(None, 3), (4, 4), (8, 2)]:
        with pytest.raises(ConfigError) as err:
            batch_split(8, micro, world)
        assert err.value.key == "train.batch_size" and "Fix:" in str(err.value)


def test_plan_checks_micro_batch_and_the_launch_world_size(monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(_compose("train.batch_size=8", "train.micro_batch_size=3"))
    assert err.value.key == "train.micro_batch_size"
    plan(_compose("train.batch_size=8", "train.micro_batch_size=4"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError) as err:
        plan(_compose("train.batch_size=8"))
    assert err.value.key == "train.batch_size" and "world_size" in str(err.value)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError):
        plan(_compose("train.batch_size=8", "train.micro_batch_size=8"))
    plan(_compose("train.batch_size=8", "train.micro_batch_size=2"))


_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "SUBMITIT_EXECUTOR", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST",
                "SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NODEID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture
def launch_env():
    """A clean launch environment, restored afterwards (detect() exports variables itself)."""
    saved = dict(os.environ)
    for var in _LAUNCH_VARS:
        os.environ.pop(var, None)
    try:
        yield os.environ
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_launch_detection(launch_env, monkeypatch):
    assert launch.detect().world_size == 1 and distributed.is_main()
    launch_env.update(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_STEP_NUM_TASKS="1")  # an array task: one process
    assert launch.detect().source == "single"
    launch_env.update(SLURM_NTASKS="4")
    del launch_env["SLURM_STEP_NUM_TASKS"]  # a batch script running python itself in a 4-task allocation
    assert launch.detect().source == "single"

    # A bare srun, 2 tasks per node on 2 nodes: this is task 3, the second one on gpu02.
    launch_env.update(SLURM_PROCID="3", SLURM_STEP_NUM_TASKS="4", SLURM_LOCALID="1", SLURM_JOB_NODELIST="gpu[01-02]",
                      SLURM_JOB_ID="1234", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1")
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError()))  # no scontrol
    env = launch.detect()
    assert (env.rank, env.world_size, env.local_rank, env.source) == (3, 4, 1, "slurm")
    assert launch_env["MASTER_ADDR"] == "gpu01" and 20000 <= int(launch_env["MASTER_PORT"]) <= 60000
    assert launch_env["RANK"] == "3" and launch_env["WORLD_SIZE"] == "4" and not distributed.is_main()

    # The same task under submitit: its TorchDistributedEnvironment exports the variables.
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        launch_env.pop(var)
    launch_env["SUBMITIT_EXECUTOR"] = "slurm"
    env = launch.detect()
    assert (env.rank, env.world_size, env.local_rank, env.source) == (3, 4, 1, "submitit")
    assert launch_env["MASTER_ADDR"] == "gpu01" and launch_env["RANK"] == "3"

    # torchrun's variables win.
    launch_env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0")
    assert launch.detect() == launch.LaunchEnv(0, 2, 0, "torchrun") and distributed.is_main()
