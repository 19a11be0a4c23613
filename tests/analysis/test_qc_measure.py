"""analysis/isoflop/qc_measure.py, the measurement behind which QC flags exclude (docs/analysis.md): on a
small run it recovers the Chinchilla exponent, reports every flag both ways, and states what the table in
the docs rests on (no outlier is ever found with 6 sizes per budget)."""
from __future__ import annotations

import numpy as np
import pytest

import analysis.isoflop.qc_measure as m
from analysis.isoflop import qc


def test_measure_reports_each_flag_both_ways(monkeypatch):
    monkeypatch.setattr(m, "GRIDS", {"coarse 4 × 6": (4, 6, 20)})
    monkeypatch.setattr(m, "NOISES", (0.003,))
    t = m.measure(reps=2, n_boot=30, seed=0)
    assert set(t["flag"]) == {*m.BUDGET_FLAGS, "outlier", "outlier at 6 sizes"}
    assert len(t) == 2 * len(set(t["flag"]))  # with and without the injected outlier
    clean = t[~t["outlier"]].set_index("flag")
    assert clean.loc["edge", "exclude rmse"] == pytest.approx(clean.loc["edge", "warn rmse"])  # never fires
    assert abs(clean.loc["edge", "exclude bias"]) < 0.03 and clean.loc["edge", "exclude no_law"] == 0
    text = m.markdown(t, fired_only=False)
    assert text.count("\n") == len(t) + 1 and "warn rmse (exclude's tables)" in text


def test_with_policy_switches_only_the_named_flag():
    f = [qc.Flag(qc.SINGLE_POINT, "x", False), qc.Flag(qc.EDGE_LOW, "y", True)]
    o = m.BudgetOptimum(1e18, "params", [], None, flags=f)  # type: ignore[arg-type]
    (on,) = m.with_policy([o], (qc.SINGLE_POINT,), True)
    assert [x.excludes for x in on.flags] == [True, True] and [x.excludes for x in o.flags] == [False, True]


def test_no_outlier_is_found_with_six_sizes():
    d = m.outlier_detection(reps=15, seed=1).set_index(["sizes", "noise %", "robust fit"])
    found = d["planted outlier found"]
    assert (found.loc[6].xs("cubic (as set)", level="robust fit") == 0).all()
    assert (found.loc[9] > 0.3).all() and (d["clean budget flagged"] < 0.2).all()
    assert np.isclose(qc.OUTLIER_DEGREE, 3)  # the detection run restored the detector's degree
