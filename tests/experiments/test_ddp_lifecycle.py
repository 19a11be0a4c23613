"""Every rank of a data-parallel launch reaches the same decision (2 gloo processes under torchrun).

A rerun of a finished run, a busy run, a crash on one rank and a preemption signal on one rank must end every
rank within seconds, with one MLflow run per identity and, after a resume on any number of processes, the same
final loss as one uninterrupted process (experiments.training.job: Job.agree)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from helpers import REPO, SMALL, pretrain

# 20 steps of 8 sequences at µ_rec 4; checkpoints every 5 steps.
RUN = [*SMALL, "model.mean_recurrence=4", "train.tokens=10240", "train.test_loops=[1,2]", "sweep_id=ddp",
       "tracking.system_metrics=false"]
RTOL = 1e-4
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PARCAE_DIST_TIMEOUT_S": "60"}


def torchrun(root, *overrides, fault=None, wait=True, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "experiments.pretrain", f"paths.root={root}", *RUN, *overrides]
    env = {**ENV, **({"PARCAE_FAULT": fault} if fault else {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _status(root):
    (run_dir,) = list((root / "runs").iterdir())
    return json.loads((run_dir / "status.json").read_text())


def _runs(root):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("parcae").experiment_id],
                                      "tags.run_kind = 'pretrain'")


def _once(root):
    """One live MLflow run, every (metric, step) in it exactly once, and the same pairs in metrics.jsonl."""
    client, runs = _runs(root)
    assert len(runs) == 1
    (run_dir,) = list((root / "runs").iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = [(k, r["step"]) for r in rows for k in r if k != "step"]
    assert len(record) == len(set(record))
    for key in ("train/loss", "val/loss", "eval/loss"):
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, key)]
        assert sorted(steps) == sorted(s for k, s in record if k == key)
    return runs[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted process: the final loss every resumed launch must reach."""
    root = tmp_path_factory.mktemp("single")
    r = pretrain(root, *RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    return _status(root)["final"]["eval/loss"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, reference):
    root = tmp_path_factory.mktemp("ddp")
    r = torchrun(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(_status(root)["final"]["eval/loss"] - reference) <= RTOL * reference
    return root


def test_rerunning_a_finished_run_ends_every_rank_at_once(finished):
    t0 = time.monotonic()
    r = torchrun(finished, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[skip]" in r.stdout + r.stderr
    print(f"2-rank rerun of a finished run: {took:.1f} s")
    assert took < 60
    assert _once(finished).info.status == "FINISHED"


def test_two_identical_launches_leave_one_finished_run(tmp_path, reference):
    first = torchrun(tmp_path, wait=False, fault="train.step:SLEEP25:0:3")  # busy long enough to be met
    lock = None
    for _ in range(600):  # until the first launch holds the run's lock
        locks = list((tmp_path / "runs").glob("*/.lock")) if (tmp_path / "runs").exists() else []
        if locks and (locks[0].parent / "status.json").exists():
            lock = locks[0]
            break
        time.sleep(0.1)
    assert lock is not None, first.communicate()[1][-3000:]
    t0 = time.monotonic()
    second = torchrun(tmp_path, timeout=60)
    assert time.monotonic() - t0 < 60
    # torchrun exits 1 when a worker fails (and stops the other); the busy decision exits 2.
    assert second.returncode != 0 and "exitcode  : 2" in second.stderr, second.stderr[-3000:]
    assert second.stderr.count("run busy error") == 1  # rank 0 says it; rank 1 exits alike, quietly
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert _once(tmp_path).info.status == "FINISHED"


@pytest.mark.slow  # CI's `make test-slow`
def test_a_crash_on_rank_1_ends_rank_0_and_fails_the_run(tmp_path, reference):
    t0 = time.monotonic()
    r = torchrun(tmp_path, fault="train.step:SIGKILL:1:7", timeout=120)
    print(f"crash on rank 1: the launch ended after {time.monotonic() - t0:.1f} s")
    assert r.returncode != 0
    assert _status(tmp_path)["status"] == "failed"
    client, runs = _runs(tmp_path)
    assert [x.info.status for x in runs] == ["FAILED"]
    r = torchrun(tmp_path)  # the same command resumes from step 5's checkpoint and finishes
    assert r.returncode == 0, r.stderr[-3000:]
    assert _once(tmp_path).info.status == "FINISHED"
    assert abs(_status(tmp_path)["final"]["eval/loss"] - reference) <= RTOL * reference


@pytest.mark.slow  # CI's `make test-slow`
def test_preemption_of_one_rank_then_resume_on_2_1_2_processes(tmp_path, reference):
    # SIGUSR2 to rank 1 after step 7: both ranks learn it from step 8's all-reduce, checkpoint step 8 and stop.
    r = torchrun(tmp_path, fault="train.step:SIGUSR2:1:7")
    assert r.returncode != 0
    status = _status(tmp_path)
    assert status["status"] == "running"
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True, mmap=True)["step"] == 8
    # One process takes over, and is preempted itself after its 5th step (step 13).
    r = subprocess.run(
        [sys.executable, "-m", "experiments.pretrain", f"paths.root={tmp_path}", *RUN], cwd=REPO,
        env={**ENV, "PARCAE_FAULT": "train.step:SIGUSR2::5"}, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0 and "preempted" in r.stderr, r.stderr[-3000:]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True, mmap=True)["step"] == 13
    r = torchrun(tmp_path)  # and two processes finish it
    assert r.returncode == 0, r.stderr[-3000:]
    run = _once(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_id == status["mlflow_run_id"]
    assert abs(_status(tmp_path)["final"]["eval/loss"] - reference) <= RTOL * reference


@pytest.mark.slow  # CI's `make test-slow`
def test_muon_under_ddp_leaves_identical_weights_on_every_rank():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests/experiments/ddp_muon_check.py")]
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "max checksum difference across ranks 0" in r.stdout
