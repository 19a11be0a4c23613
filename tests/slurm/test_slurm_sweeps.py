"""Sweeps on a real SLURM through hydra-submitit-launcher: jobs run as an array, and a job requeued
in the middle of training resumes from its checkpoint into the same MLflow run and ends where an
uninterrupted run ends. With two ranks per job (tasks_per_node=2, gloo): a rerun of a finished point
ends every rank at once, and a job that reaches its time limit is requeued (max_num_timeout) and
finishes on its second attempt."""

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from experiments.config import schema

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.eval_every=10",
         "train.checkpoint_every=5", "train.test_loops=[1,4]", "train.threads=1"]


def _pretrain(root, *overrides, wait=True, timeout=900):
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants its flags before overrides
    cmd = [sys.executable, "-m", "experiments.pretrain", *flags, f"paths.root={root}",
           *(o for o in overrides if not o.startswith("-"))]
    kw = dict(cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return subprocess.Popen(cmd, **kw)
    return subprocess.run(cmd, timeout=timeout, **kw)


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


# Two ranks on one node, each with one CPU and one thread; the private cluster oversubscribes its cores.
TWO_RANKS = ["launcher=slurm_local", "hydra.launcher.tasks_per_node=2"]


def _job_dir(root: Path, sweep_id: str) -> Path:
    """The submitit folder of the latest multirun of a one-point sweep, named by its SLURM job id."""
    return sorted(root.glob(f"multirun/{sweep_id}/*/.submitit/*"))[-1]


def _job_info(job: str) -> dict[str, str]:
    """scontrol's record of a job (kept MinJobAge = 300 s after it ends; no accounting database needed)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _cancel_all() -> None:
    """Leave the cluster idle for the next test when this one fails half-way."""
    jobs = _queued_jobs()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def test_one_failed_rank_ends_the_whole_step(slurm_cluster, tmp_path):
    """The setup lines of the SLURM presets make srun end every task of a step when one exits non-zero
    (--kill-on-bad-exit): a rank that crashed does not leave the others waiting until the time limit."""
    schema.register()  # as the entry points do
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        setup = list(compose("config", ["launcher=slurm_local"], return_hydra_config=True).hydra.launcher.setup)
    script = tmp_path / "job.sh"
    script.write_text("\n".join(["#!/bin/bash", *setup,
                                 "srun --ntasks=2 bash -c '[ $SLURM_PROCID = 1 ] && exit 3; sleep 300'", ""]))
    t0 = time.time()
    job = subprocess.run(["sbatch", "--wait", "--ntasks=2", "--cpus-per-task=1", "--time=10",
                          f"--output={tmp_path}/out.txt", str(script)], capture_output=True, text=True, timeout=120)
    assert job.returncode != 0 and time.time() - t0 < 60, (job.stdout, job.stderr)
    assert "task 1: Exited with exit code 3" in (tmp_path / "out.txt").read_text()


def test_rerun_of_a_finished_two_rank_point_ends_every_rank_at_once(slurm_cluster, tmp_path):
    """Rank 0 decides the job is finished and every rank acts on it: no rank waits in a collective for a
    peer that already returned (it would hold the job, and on a cluster 7 of 8 GPUs, until the time limit)."""
    job = [*TWO_RANKS, *SMALL, "train.tokens=10240", "model.mean_recurrence=2", "sweep_id=rerun2"]
    first = _pretrain(tmp_path, "-m", *job)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    trained = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.suffix in (".pt", ".jsonl")}
    assert "checkpoint.pt" in trained and "metrics.jsonl" in trained
    (run,) = _runs(tmp_path)

    try:  # a hanging rank would hold the job until its 30-minute limit: give up at 4 minutes
        rerun = _pretrain(tmp_path, "-m", *job, timeout=240)
    except subprocess.TimeoutExpired:
        _cancel_all()
        raise AssertionError("the rerun of a finished 2-rank job did not end within 4 minutes")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    jobdir = _job_dir(tmp_path, "rerun2")
    logs = {rank: (jobdir / f"{jobdir.name}_{rank}_log.out").read_text() for rank in (0, 1)}
    assert "[skip]" in logs[0], logs[0][-3000:]
    for rank, log in logs.items():
        assert "Job completed successfully" in log, f"rank {rank}:\n{log[-3000:]}"
    for _ in range(150):  # the driver returns once both ranks wrote their results; wait for the step to end
        info = _job_info(jobdir.name)
        if info["JobState"] not in ("RUNNING", "COMPLETING"):
            break
        time.sleep(0.2)
    # Every rank exited 0 (srun's exit code is its tasks' highest), seconds after rank 0 decided to skip.
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info
    skipped_at = _log_time(next(line for line in logs[0].splitlines() if "[skip]" in line))
    assert (datetime.fromisoformat(info["EndTime"]) - skipped_at).total_seconds() < 30, (info, skipped_at)

    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.suffix in (".pt", ".jsonl")} == trained
    (again,) = _runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"


def test_a_time_limit_requeues_the_job_and_the_second_attempt_finishes(slurm_cluster, tmp_path):
    """A time limit cuts a 2-rank job short: SLURM's SIGUSR2 makes it checkpoint after its step and
    submitit requeue it as a timeout (max_num_timeout of launcher=slurm); the requeued job resumes into
    the same run dir and MLflow run, and finishes on its second attempt.

    Start-up takes 10-40 s on a busy 2-core machine and SLURM checks limits every 30 s, in whole
    minutes, so a limit fixed at submission may strike before training starts. The test therefore
    sets it once the job trains: 30-90 s ahead, which with signal_delay_s=90 brings the warning at
    SLURM's next check (≤ 30 s) and the kill at least 30 s after it. timeout_min=5 at submission makes
    every signal a timeout to submitit (it counts one only after min(0.8 × limit, limit − 10 min)).
    Once requeued, the limit is lifted so that the second attempt finishes however busy the machine is.
    """
    # 600 steps: ~60 s of training on an idle machine, more than the ≤ 30 s to the warning.
    job = [*TWO_RANKS, *SMALL, "model.mean_recurrence=4", "train.tokens=307200", "sweep_id=timelimit",
           "hydra.launcher.timeout_min=5", "hydra.launcher.signal_delay_s=90"]
    driver = _pretrain(tmp_path, "-m", *job, wait=False)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and not list(tmp_path.glob("runs/*/checkpoint.pt")):
            time.sleep(0.2)
        assert driver.poll() is None, "the job ended before its first checkpoint: " + driver.stderr.read()[-3000:]
        (jobdir,) = tmp_path.glob("multirun/timelimit/*/.submitit/[0-9]*")
        h, m, sec = map(int, _job_info(jobdir.name)["RunTime"].split(":"))
        limit_min = (3600 * h + 60 * m + sec + 90) // 60  # ends 30-90 s from now
        subprocess.run(["scontrol", "update", f"JobId={jobdir.name}", f"TimeLimit={limit_min}"], check=True)
        while time.time() < deadline and driver.poll() is None and _job_info(jobdir.name)["Restarts"] == "0":
            time.sleep(0.5)
        assert driver.poll() is None, "the job ended before its time limit: " + driver.stderr.read()[-3000:]
        assert time.time() < deadline, "the job was not requeued at its time limit"
        subprocess.run(["scontrol", "update", f"JobId={jobdir.name}", "TimeLimit=15"], check=True)
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            _cancel_all()
    assert driver.returncode == 0, err[-3000:]

    script = (jobdir / f"{jobdir.name}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@90" in script and "export SLURM_KILL_BAD_EXIT=1" in script
    log0 = (jobdir / f"{jobdir.name}_0_log.out").read_text() + (jobdir / f"{jobdir.name}_0_log.err").read_text()
    assert "this job is timed-out" in log0 and "(2 remaining timeouts)" in log0, log0[-3000:]
    resumed = re.search(r"resuming from step (\d+)", log0)
    assert resumed and int(resumed.group(1)) > 0, log0[-3000:]
    info = _job_info(jobdir.name)
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0", info

    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["steps"] == 600
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_id == status["mlflow_run_id"]
    steps = [m.step for m in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id,
                                                                                               "train/loss")]
    assert min(steps) < int(resumed.group(1)) < max(steps) == 600  # both attempts logged into the one run


def test_cooldown_branches_as_a_slurm_array_match_the_local_launcher(slurm_cluster, tmp_path):
    """Both branches of one trunk start at once as array tasks: one trains the trunk, the other waits for its
    stop (experiments.training.branching), and both end where the local launcher's branches end."""
    grid = [*SMALL, "model.mean_recurrence=2", "train.tokens=10240,20480", "sweep.branching=true",
            "sweep_id=slurm-branch"]
    slurm = _pretrain(tmp_path / "slurm", "-m", "launcher=slurm_local", *grid)
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    local = _pretrain(tmp_path / "local", "-m", *grid)
    assert local.returncode == 0, local.stderr[-3000:]
    losses = {}
    for where in ("slurm", "local"):
        runs = _runs(tmp_path / where)
        assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
        assert len({run.data.tags["branch.trunk"] for run in runs}) == 1
        (trunk,) = (tmp_path / where / "runs").glob("trunk-*")
        assert len(list(trunk.glob("stop-*.pt"))) == 2
        losses[where] = {run.data.tags["config_hash"]: run.data.metrics["eval/loss"] for run in runs}
    assert losses["slurm"].keys() == losses["local"].keys()
    for h, loss in losses["slurm"].items():
        assert abs(loss - losses["local"][h]) <= 1e-6 * abs(loss), (h, loss, losses["local"][h])
