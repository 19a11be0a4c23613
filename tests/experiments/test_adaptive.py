"""Adaptive bracketing (experiments.launch.adaptive): the decision rule on constructed results, and the
driver end to end with real tiny runs (extension, rerun adds nothing, an interrupted extension resumes)."""

import json
import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from analysis.report.sections import adaptive_section as _adaptive_section
from experiments.launch.adaptive import Extension, extensions
from experiments.launch.sweep_status import read_manifest
from helpers import REPO, SMALL

LADDER = [1, 2, 3, 4, 6, 8, 12, 16]


def _pts(C, losses, state="finished"):
    return [(C, mu, state, loss) for mu, loss in losses.items()]


def test_upper_edge_extends_up_lower_bound_stops_interior_stays():
    pts = (_pts(1e12, {1: 2.0, 2: 2.1, 4: 2.2})            # optimum at µ_rec = 1: looping does not pay, nothing
           + _pts(2e12, {1: 2.0, 2: 1.9, 4: 1.8, 8: 1.7})   # upper edge → 12
           + _pts(4e12, {1: 2.0, 2: 1.9, 4: 2.1})           # interior
           + _pts(8e12, {4: 1.5, 8: 1.6}))                  # lower edge above the bound → 3
    got = extensions(pts, LADDER)
    assert [(e.flop_budget, e.mean_recurrence) for e in got] == [(2e12, 12), (8e12, 3)]
    assert "upper edge µ_rec = 8" in got[0].reason


def test_unfinished_budget_waits_and_ladder_end_stops():
    pts = _pts(1e12, {1: 2.0, 2: 1.9}) + [(1e12, 4, "running", None)] + _pts(2e12, {8: 2.0, 16: 1.9})
    assert extensions(pts, LADDER) == []


def _sweep(root, *overrides):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "experiments.sweep", "sweep=isoflop", f"paths.root={root}", *SMALL,
           "sweep_id=adapt", "train.flop_budget=3e10", "sweep.max_extra_points=2", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_driver_extends_edge_optimum_rerun_adds_nothing_interrupted_extension_resumes(tmp_path):
    # Two µ_rec values: whichever wins sits on an edge, so the driver must add a point (µ_rec 1 or 4).
    r = _sweep(tmp_path, "model.mean_recurrence=2,3")
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "sweeps" / "adapt" / "adaptive.json").read_text())
    assert 1 <= len(record) <= 2 and record[0]["mean_recurrence"] in (1, 4) and "edge" in record[0]["reason"]
    manifest = read_manifest(tmp_path, "adapt")
    assert len(manifest["jobs"]) == 2 + len(record)  # every added point is a grid point of the same sweep
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("parcae")
    runs = client.search_runs([exp.experiment_id], "tags.sweep_id = 'adapt' and tags.run_kind = 'pretrain'")
    assert len(runs) == 2 + len(record) and all(run.info.status == "FINISHED" for run in runs)
    parent = client.search_runs([exp.experiment_id], "tags.sweep_id = 'adapt' and tags.run_kind = 'sweep'")
    assert json.loads(parent[0].data.tags["sweep.adaptive"]) == record
    section = _adaptive_section(f"sqlite:///{tmp_path}/mlflow.db", "parcae", "adapt")  # the report lists them
    assert section and record[0]["reason"] in section

    again = _sweep(tmp_path, "model.mean_recurrence=2,3")  # same results → same decisions → nothing new
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[done]" not in again.stdout + again.stderr
    assert json.loads((tmp_path / "sweeps" / "adapt" / "adaptive.json").read_text()) == record

    # An extension recorded but never trained (the driver was killed as it launched it) runs on the next start.
    extra = {"flop_budget": 3e10, "mean_recurrence": 6, "reason": "recorded by an interrupted pass"}
    (tmp_path / "sweeps" / "adapt" / "adaptive.json").write_text(json.dumps([*record, extra]))
    resumed = _sweep(tmp_path, "model.mean_recurrence=2,3", "sweep.max_extra_points=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = client.search_runs([exp.experiment_id], "tags.sweep_id = 'adapt' and tags.run_kind = 'pretrain'")
    assert sorted(int(r.data.params["model.mean_recurrence"]) for r in runs) == sorted(
        [2, 3, *(e["mean_recurrence"] for e in record), 6])


def test_dense_test_loops_cover_every_T_to_mu_and_beyond():
    from experiments.config.plan import dense_test_loops
    assert dense_test_loops(1) == [1, 2, 3]
    assert dense_test_loops(4) == [1, 2, 3, 4, 6, 8, 12]
    assert dense_test_loops(8)[:8] == list(range(1, 9)) and dense_test_loops(8)[-1] == 24
