"""`experiments.status` tells finished, failed, interrupted and never-started grid points apart from our
own records (manifest, run dirs, MLflow), and `--resume` runs only what is not finished."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, SMALL, pretrain

GRID = [*SMALL, "train.tokens=30720", "model.mean_recurrence=1,2,4", "sweep_id=st"]  # 60 steps each


def _status(root, *args):
    return subprocess.run([sys.executable, "-m", "experiments.status", "st", f"--root={root}", *args],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)


def _states(out: str) -> dict[str, str]:
    rows = [line.split() for line in out.splitlines()[2:-1] if line.strip()]  # the last line: a note
    # Columns: the point (the run name's label), hash, state ("not started": two words), step, ...
    return {r[0]: " ".join(r[2:4]) if r[2] == "not" else r[2] for r in rows}


@pytest.mark.slow  # CI's `make test-slow`
def test_status_reports_finished_failed_and_not_started_then_resume_completes(tmp_path):
    driver = pretrain(tmp_path, "-m", *GRID, wait=False)
    deadline = time.time() + 300
    # Interrupt (Ctrl-C) while the second job trains: job 1 finished, job 2 failed, job 3 never started.
    while time.time() < deadline and driver.poll() is None and len(list(tmp_path.glob("runs/*/checkpoint.pt"))) < 2:
        time.sleep(0.05)
    assert driver.poll() is None
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=120)

    r = _status(tmp_path)
    assert r.returncode == 0, r.stderr
    # Rows are named as the runs are (mu2-D30720); the driver is gone, so the third point is not queued.
    assert _states(r.stdout) == {"mu1-D30720": "finished", "mu2-D30720": "failed",
                                 "mu4-D30720": "not started"}, r.stdout
    assert "1 finished, 1 failed, 1 not started" in r.stdout
    finished = next(line for line in r.stdout.splitlines() if line.startswith("mu1-D30720")).split()
    assert re.fullmatch(r"\d\.\d{4}", finished[4])  # eval/loss, the final evaluation

    r = _status(tmp_path, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _status(tmp_path)
    assert set(_states(r.stdout).values()) == {"finished"}, r.stdout
    statuses = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/status.json")]
    assert len(statuses) == 3


def test_status_of_an_unknown_sweep_is_a_clear_error(tmp_path):
    r = _status(tmp_path)
    assert r.returncode == 2 and "no manifest for sweep 'st'" in r.stderr
