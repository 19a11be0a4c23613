"""The harness on 2 processes (torchrun, gloo): either rank dies, the same torchrun command is run again, and the
run is recorded exactly once, FINISHED, at the 1-process loss up to float rounding. Rank 0 alone writes the run dir
and MLflow, so most phase points exist on rank 0 only; rank 1 passes the final evaluation's, and is otherwise killed
from outside mid-training."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

import harness as h

RANKS = 2


def _ppid(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces


def _pids(launcher: int) -> dict[int, int]:
    """rank → pid of the workers a torchrun process started (its children; they get their own sessions)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or _ppid(entry.name) != launcher:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for var in env:
            if var.startswith(b"RANK="):
                found[int(var[5:])] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def _step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def test_rank_1_killed_mid_training_fails_the_run_soon_and_the_rerun_finishes_it(root, cache, ref):
    # Rank 0's progress.json every 0.1 s says when training is past the checkpoint at step 14.
    job = h.start(root, ranks=RANKS, cache=cache, env={"PROGRESS_EVERY_S": "0.1"})
    run_dir = root / "runs" / ref.hash
    deadline = time.monotonic() + 180
    while _step(run_dir) < 17 and job[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = _pids(job[0].pid)
    assert set(pids) == {0, 1} and _step(run_dir) >= 17, h.wait(job, 10).tail()
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    faulted = h.wait(job, 120)
    while _alive(pids[0]) and time.monotonic() - killed_at < 60:
        time.sleep(0.2)
    rank0_s = time.monotonic() - killed_at
    print(f"rank 0 ended {rank0_s:.1f}s after rank 1 was killed (torchrun exit {faulted.returncode})")
    status = json.loads((run_dir / "status.json").read_text())
    runs = h.pretrain_runs(root)
    bad = []
    if _alive(pids[0]):
        bad.append(f"rank 0 (pid {pids[0]}) still alive {rank0_s:.0f}s after rank 1 was killed")
    if status.get("status") != "failed":
        bad.append(f"status.json says {status.get('status')!r} after rank 1 died, expected 'failed'")
    if [r.info.status for r in runs] != ["FAILED"]:
        bad.append(f"MLflow runs {[r.info.status for r in runs]} after rank 1 died, expected ['FAILED']")
    rerun = h.launch(root, ranks=RANKS, cache=cache)
    bad += h.violations(root, ref, rtol=h.RTOL_TWO_RANKS) if rerun.returncode == 0 else ["the rerun failed"]
    assert not bad, h.report(faulted, rerun, bad)


# (fault, what it is): rank 0 at the points where it writes, rank 1 during the final evaluation.
RANK_FAULTS = [
    "checkpoint.after_write:SIGKILL:0:3",    # step 21 written, its rows not flushed
    "metrics.after_jsonl:SIGKILL:0:3",       # step 21's rows in metrics.jsonl, not in MLflow
    "checkpoint.before_write:SIGINT:0:5",    # Ctrl-C on rank 0 while step 30's rows wait for a checkpoint
    "metrics.after_mlflow:SIGTERM:0:4",      # a preemption notice on rank 0 after step 21's flush
    "finish.before_mlflow:SIGKILL:0:1",      # status.json finished, MLflow not told
    "eval.final:SIGKILL:1:2",                # rank 1 dies during the final evaluation
    "eval.final:SIGUSR2:1:2",
]


@pytest.mark.faults_full
@pytest.mark.parametrize("fault", RANK_FAULTS)
def test_two_ranks_fault_then_rerun_records_the_run_once(fault, root, cache, ref):
    faulted, rerun = h.fault_then_rerun(root, fault, ranks=RANKS, cache=cache)
    assert faulted.returncode != 0, f"the fault {fault} never stopped the job\n{faulted.tail()}"
    assert rerun.returncode == 0, h.report(faulted, rerun, ["the rerun failed"])
    bad = h.violations(root, ref, rtol=h.RTOL_TWO_RANKS)
    assert not bad, h.report(faulted, rerun, bad)
