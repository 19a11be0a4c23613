"""Faults of the disk and the stores rather than of the process: a full disk (ENOSPC injected at a write), a
read-only runs/, a lost MLflow store, a deleted status.json, a corrupt checkpoint deleted as its error advises, and
a project directory copied elsewhere. After each, the same command records the run exactly once."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import harness as h

pytestmark = pytest.mark.slow  # minutes of training: CI's `make test-slow`, not `make test`


@pytest.mark.parametrize("fault", [
    # The chain of test_phases has a full disk at a metrics flush; these run with the full matrix.
    pytest.param("metrics.before_jsonl:ENOSPC::3", marks=pytest.mark.faults_full),     # step 20's rows
    pytest.param("checkpoint.before_write:ENOSPC::5", marks=pytest.mark.faults_full),  # step 35 cannot be written
    pytest.param("status.before_write:ENOSPC::2", marks=pytest.mark.faults_full),      # "finished" cannot be written
])
def test_a_full_disk_then_rerun_records_the_run_once(fault, root, cache, ref):
    faulted, rerun = h.fault_then_rerun(root, fault, cache=cache)
    assert faulted.returncode != 0, f"the full disk at {fault} went unnoticed\n{faulted.tail()}"
    assert rerun.returncode == 0, h.report(faulted, rerun, ["the rerun failed"])
    bad = h.violations(root, ref)
    assert not bad, h.report(faulted, rerun, bad)


def test_a_lost_store_is_rebuilt_from_the_run_dir(finished, cache, ref):
    (finished / "mlflow.db").unlink()
    rerun = h.launch(finished, cache=cache)
    assert rerun.returncode == 0, rerun.tail()
    bad = h.violations(finished, ref)
    assert not bad, h.report(rerun, rerun, bad)


def test_a_deleted_status_neither_evaluates_nor_logs_again(finished, cache, ref):
    (finished / "runs" / ref.hash / "status.json").unlink()
    rerun = h.launch(finished, cache=cache)
    assert rerun.returncode == 0, rerun.tail()
    bad = h.violations(finished, ref)
    assert not bad, h.report(rerun, rerun, bad)


def _artifact_files(root: Path, run_id: str) -> list[Path]:
    return [p for p in (root / "mlartifacts").rglob("*") if p.is_file() and run_id in p.parts]


def test_a_copied_project_keeps_its_new_artifacts_in_the_copy(finished, reference, cache):
    """`finished` is the reference's project directory copied elsewhere: a new run there logs its artifacts
    (config, tokenizer, model) under the copy's mlartifacts/, never the original's."""
    original = reference[0]
    out = h.launch(finished, "train.seed=1", cache=cache)
    assert out.returncode == 0, out.tail()
    new = [r for r in h.pretrain_runs(finished) if r.data.tags.get("config_hash") != reference[1].hash]
    assert len(new) == 1 and new[0].info.status == "FINISHED", [r.info for r in h.pretrain_runs(finished)]
    run = new[0].info
    leaked = _artifact_files(original, run.run_id)
    assert not leaked, f"the copy's new run {run.run_id} wrote into the original's mlartifacts: {leaked[:4]}"
    assert run.artifact_uri.replace("file://", "").startswith(str(finished.resolve() / "mlartifacts")), \
        f"artifact_uri {run.artifact_uri} is outside the copy {finished}"
    names = {p.name for p in _artifact_files(finished, run.run_id)}
    assert {"config.yaml", "tokenizer.json", "checkpoint.pt"} <= names, names


@pytest.mark.faults_full
def test_a_corrupt_checkpoint_deleted_as_advised_records_the_run_once(root, cache, ref):
    # MLflow holds steps 1-20 (flushed at the checkpoint of step 21) when the job dies.
    faulted = h.launch(root, fault="metrics.after_mlflow:SIGKILL::4", cache=cache)
    assert faulted.killed_by == "SIGKILL", faulted.tail()
    ckpt = root / "runs" / ref.hash / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint")
    refused = h.launch(root, cache=cache)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.tail()
    assert "delete it" in refused.stderr, refused.tail()
    ckpt.unlink()
    rerun = h.launch(root, cache=cache)
    assert rerun.returncode == 0, h.report(refused, rerun, ["the rerun failed"])
    bad = h.violations(root, ref)
    assert not bad, h.report(refused, rerun, bad)


def _read_only(path: Path) -> tuple[str, ...]:
    """A command prefix under which `path` is read-only. Root writes through file modes, so as root the job runs
    in its own mount namespace with `path` bound read-only (skipped where that is not allowed); otherwise a chmod."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return ()
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(path), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root, where file modes do not stop writes, and a read-only bind mount is not "
                    f"allowed here ({probe.stderr.decode(errors='replace').strip()[:120]})")
    return ("unshare", "-m", "sh", "-c", script, str(path))


def test_a_read_only_runs_dir_skips_a_finished_run_and_refuses_a_new_one_in_one_line(finished, cache, ref):
    runs = finished / "runs"
    wrap = _read_only(runs)
    try:
        skipped = h.launch(finished, cache=cache, wrap=wrap)
        refused = h.launch(finished, "train.seed=1", cache=cache, wrap=wrap)
    finally:
        for p in [runs, *runs.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    assert skipped.returncode == 0, skipped.tail()
    bad = h.violations(finished, ref)
    assert not bad, h.report(skipped, skipped, bad)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.tail()
    assert "runs" in refused.stderr.strip().splitlines()[-1], refused.tail()
