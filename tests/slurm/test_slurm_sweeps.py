"""Sweeps on a real SLURM through hydra-submitit-launcher: jobs run as an array, and a job requeued
in the middle of training resumes from its checkpoint into the same MLflow run and ends where an
uninterrupted run ends."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.eval_every=10",
         "train.checkpoint_every=5", "train.test_loops=[1,4]", "train.threads=1"]


def _pretrain(root, *overrides, wait=True):
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants its flags before overrides
    cmd = [sys.executable, "-m", "experiments.pretrain", *flags, f"paths.root={root}",
           *(o for o in overrides if not o.startswith("-"))]
    kw = dict(cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return subprocess.Popen(cmd, **kw)
    return subprocess.run(cmd, timeout=900, **kw)


def _runs(root):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("parcae").experiment_id],
                              "tags.run_kind = 'pretrain'")


def test_sweep_runs_as_a_slurm_array(slurm_cluster, tmp_path):
    r = _pretrain(tmp_path, "-m", "launcher=slurm_local", *SMALL, "train.tokens=10240",
                  "model.mean_recurrence=1,2", "sweep_id=slurm")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = _runs(tmp_path)
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    script = next(tmp_path.glob("multirun/slurm/*/.submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --signal=USR2@" in script


def _queued_jobs(*squeue_args: str) -> set[str]:
    """The ids of the jobs the private cluster lists (all states: pending, running, completing, unless
    squeue_args narrow them); an array task looks like 7_0."""
    return set(subprocess.run(["squeue", "-h", "-o", "%i", *squeue_args], capture_output=True, text=True,
                              check=True).stdout.split())


def _running_job() -> str:
    """The id of the one job running on the private cluster."""
    (job,) = _queued_jobs("-t", "RUNNING")
    return job


def test_scontrol_requeue_resumes_into_the_same_run(slurm_cluster, tmp_path):
    job = [*SMALL, "model.mean_recurrence=4", "train.tokens=61440", "sweep_id=requeue"]  # 120 steps
    ref = _pretrain(tmp_path / "ref", *job)
    assert ref.returncode == 0, ref.stderr[-3000:]
    (ref_dir,) = (tmp_path / "ref" / "runs").iterdir()
    ref_final = json.loads((ref_dir / "status.json").read_text())["final"]

    root = tmp_path / "slurm"
    driver = _pretrain(root, "-m", "launcher=slurm_local", *job, wait=False)
    deadline = time.time() + 600
    while time.time() < deadline and driver.poll() is None and not list(root.glob("runs/*/checkpoint.pt")):
        time.sleep(0.1)
    assert driver.poll() is None, "the job ended before its first checkpoint"
    requeue = subprocess.run(["scontrol", "requeue", _running_job()], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]

    (run_dir,) = (root / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    logs = "".join(p.read_text() for p in root.glob("multirun/requeue/*/.submitit/*/*_log.*"))
    assert "resuming from step" in logs
    for key, value in ref_final.items():
        assert abs(status["final"][key] - value) < 1e-4, key
    runs = _runs(root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id == status["mlflow_run_id"]


def test_a_bad_grid_point_submits_nothing(slurm_cluster, tmp_path):
    """An error while preparing the sweep (here: paths.root under a file, so no manifest can be written)
    ends the driver with one line and exit 2 before any array is submitted (Hydra would only warn)."""
    (tmp_path / "file").write_text("")
    before = _queued_jobs()  # a job of an earlier test may still be completing: compare ids, not the queue
    r = _pretrain(tmp_path / "file" / "root", "-m", "launcher=slurm_local", *SMALL, "train.tokens=10240",
                  "model.mean_recurrence=1,2", "sweep_id=bad", "tracking.enabled=false")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Nothing was launched" in r.stderr
    assert not list(tmp_path.glob("**/.submitit"))
    assert not _queued_jobs() - before, "a job was submitted"
