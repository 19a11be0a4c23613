"""A job killed with SIGKILL mid-run resumes from its checkpoint into the same MLflow run and ends
where an uninterrupted run ends."""

import json
import os

import pytest
import signal
import time

from mlflow.tracking import MlflowClient

from helpers import SMALL, pretrain

RUN = [*SMALL, "model.mean_recurrence=4", "train.tokens=40960", "sweep_id=resume"]  # 80 steps


def _only_run_dir(root):
    (run_dir,) = list((root / "runs").iterdir())
    return run_dir


@pytest.mark.parametrize("train", ["default", "parcae"])  # AdamW, and the reference's MuonAdamW
def test_kill9_then_resume_matches_uninterrupted(tmp_path, train):
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    run = [f"train={train}", *RUN]
    ref = pretrain(ref_root, *run)
    assert ref.returncode == 0, ref.stderr
    ref_status = json.loads((_only_run_dir(ref_root) / "status.json").read_text())

    proc = pretrain(root, *run, wait=False)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((root / "runs").glob("*/checkpoint.pt")) if (root / "runs").exists() else []
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    assert ckpt is not None and proc.poll() is None, "the run ended before its first checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = _only_run_dir(root)
    killed = json.loads((run_dir / "status.json").read_text())
    assert killed["status"] == "running"

    again = pretrain(root, *run)
    assert again.returncode == 0, again.stderr
    assert "resuming from step" in again.stdout
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    assert status["mlflow_run_id"] == killed["mlflow_run_id"]
    assert run_dir.name == _only_run_dir(ref_root).name  # same identity on both roots
    for key, value in ref_status["final"].items():
        assert abs(status["final"][key] - value) < 1e-4, key

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("parcae").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert abs(runs[0].data.metrics["eval/loss"] - ref_status["final"]["eval/loss"]) < 1e-4


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_preemption_signal_checkpoints_at_once_and_resumes(tmp_path, signum):
    """SIGUSR2 (SLURM's warning before preemption) or SIGTERM (requeue, cancel, kill) writes a checkpoint at
    the current step, even off the checkpoint cadence, and the same command resumes from it into the same
    MLflow run."""
    run = [*RUN, "train.checkpoint_every=1000"]  # only the signal can write a mid-run checkpoint
    proc = pretrain(tmp_path, *run, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob("runs/*/status.json")):
        time.sleep(0.02)
    time.sleep(1.0)  # into the training loop
    assert proc.poll() is None
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "preempted" in err
    run_dir = _only_run_dir(tmp_path)
    assert (run_dir / "checkpoint.pt").exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"

    again = pretrain(tmp_path, *run)
    assert again.returncode == 0, again.stderr
    assert "resuming from step" in again.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("parcae").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
