"""Cooldown branches (experiments.training.branching) under kills: a two-budget branched sweep of one trunk, killed
during the trunk, during a branch and while a second job extends the trunk, then resumed, ends exactly as the
uninterrupted branched sweep does: one run dir and one MLflow run per identity, every (metric, step) once, the same
losses. A rerun trains nothing, and a branch computes what the independent run of the same schedule computes."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import pytest

import harness as h
from experiments.launch import sweep_status

# about 3 minutes of sweeps on 2 cores, the last file of the default suite to finish: CI's `make test-slow`
pytestmark = pytest.mark.slow

# Budgets 2e10 and 4e10 FLOPs of the harness job: 21 and 42 steps, cooldown_fraction 0.5, so the branches leave the
# trunk at steps 11 and 21. In one process the train.step fault point counts: job 1's trunk steps 1-11, its branch
# 12-21, job 2's trunk extension 12-21, its branch 22-42 (checkpoints every 7 steps).
BRANCHED = ["hydra.mode=MULTIRUN", "train.flop_budget=2e10,4e10", "sweep.branching=true"]
RTOL_BRANCH = 1e-6  # a branch against the independent run of the same schedule: the same arithmetic


def _state(root: Path) -> dict[str, dict]:
    """config_hash -> (final eval/loss, MLflow (metric, step) counts, metrics.jsonl counts) of every branch."""
    out = {}
    for run in h.pretrain_runs(root):
        hsh = run.data.tags["config_hash"]
        run_dir = Path(root) / "runs" / hsh
        out[hsh] = {"loss": json.loads((run_dir / "status.json").read_text())["final"]["eval/loss"],
                    "mlflow": h.mlflow_pairs(root, run.info.run_id), "jsonl": h.jsonl_pairs(run_dir),
                    "status": run.info.status, "trunk": run.data.tags.get("branch.trunk"),
                    "from_step": run.data.tags.get("branch.from_step")}
    return out


def _status(root: Path) -> str:
    """What `make status` prints for the harness's sweep."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert sweep_status.main([h.SWEEP, f"--root={root}"]) == 0
    return buf.getvalue()


def _volatile(pairs: Counter) -> Counter:
    """Leave out the metrics that are speeds and times by nature."""
    return Counter({k: n for k, n in pairs.items() if k[0].startswith(h.COMPARED_PREFIXES) or k[0] == "train/lr"})


def test_branched_sweep_killed_in_trunk_and_branch_resumes_exactly_once(tmp_path, shared, cache):
    store_template = shared / "template.db"
    ref_root = h.new_root(tmp_path / "reference", store_template)
    ref = h.launch(ref_root, *BRANCHED, cache=cache)
    assert ref.returncode == 0, ref.tail()
    reference = _state(ref_root)
    assert len(reference) == 2 and len({r["trunk"] for r in reference.values()}) == 1, reference
    assert sorted(int(r["from_step"]) for r in reference.values()) == [11, 21]
    trunks = [d for d in (ref_root / "runs").iterdir() if d.name.startswith("trunk-")]
    assert len(trunks) == 1 and sorted(p.name for p in trunks[0].glob("stop-*.pt")) == ["stop-11.pt", "stop-21.pt"]

    # The independent run of the longer budget, same schedule (the warm-up the sweep derived): the same numbers.
    warmup = json.loads((ref_root / "sweeps" / h.SWEEP / "branching.json").read_text())["warmup_tokens"]
    ind_root = h.new_root(tmp_path / "independent", store_template)
    ind = h.launch(ind_root, "train.flop_budget=4e10", f"train.warmup_tokens={warmup}", cache=cache)
    assert ind.returncode == 0, ind.tail()
    (ind_dir,) = h.run_dirs(ind_root)
    ind_loss = json.loads((ind_dir / "status.json").read_text())["final"]["eval/loss"]
    longest = max(reference.values(), key=lambda r: int(r["from_step"]))
    assert math.isclose(longest["loss"], ind_loss, rel_tol=RTOL_BRANCH), (longest["loss"], ind_loss)
    ind_values = h.jsonl_values(ind_dir)
    branch_values = h.jsonl_values(ref_root / "runs" / next(k for k, v in reference.items() if v is longest))
    compared = [k for k in ind_values if k[0].startswith(h.COMPARED_PREFIXES)]
    assert compared and set(compared) <= set(branch_values)  # the branch's record holds the trunk's curve too
    assert all(math.isclose(branch_values[k], ind_values[k], rel_tol=RTOL_BRANCH) for k in compared)

    # Killed in the trunk (step 5), in job 1's branch, in job 2's extension of the trunk; then resumed.
    root = h.new_root(tmp_path / "faulted", store_template)
    for nth in (5, 8, 10):
        out = h.launch(root, *BRANCHED, cache=cache, fault=f"train.step:SIGKILL::{nth}")
        assert out.killed_by == "SIGKILL", out.tail()
        if nth == 5:  # make status after a kill in the trunk: idle, towards its furthest stop (21), no stop kept
            trunk_line = _status(root).split("trunks (sweep.branching=true): 1: 1 idle\n")[1].splitlines()[1]
            fields = trunk_line.split()
            assert fields[1] == "idle" and fields[2].endswith("/21") and fields[3:6] == ["0", "of", "2"], trunk_line
    out = h.launch(root, *BRANCHED, cache=cache)
    assert out.returncode == 0, out.tail()
    got = _state(root)
    assert set(got) == set(reference), (sorted(got), sorted(reference))
    for hsh, want in reference.items():
        g = got[hsh]
        assert g["status"] == "FINISHED"
        assert math.isclose(g["loss"], want["loss"], rel_tol=h.RTOL_ONE_RANK), (hsh, g["loss"], want["loss"])
        for where in ("mlflow", "jsonl"):
            assert max(g[where].values()) == 1, (where, [k for k, n in g[where].items() if n > 1])
            assert _volatile(g[where]) == _volatile(want[where]), where
    assert sorted(d.name for d in h.run_dirs(root)) == sorted(d.name for d in h.run_dirs(ref_root))
    status = _status(root)
    assert "2 grid points: 2 finished" in status and "trunks (sweep.branching=true): 1: 1 done" in status, status
    assert " 2 of 2 " in status, status

    # A rerun trains nothing: neither trunk nor branch takes a step.
    again = h.launch(root, *BRANCHED, cache=cache)
    assert again.returncode == 0, again.tail()
    assert again.stderr.count("[skip]") + again.stdout.count("[skip]") == 2, again.tail()
    assert "trunk " not in again.stderr + again.stdout, again.tail()
