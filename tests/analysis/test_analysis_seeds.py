"""Seeds as replicates (issue 24): a table whose grid points were each trained with K seeds (``--train-seed``)
is averaged per point by both estimators, gets a seed bootstrap beside the run bootstrap, the seed noise
per budget, and a paired verdict on whether each optimum beats its grid neighbours; branched runs are
listed with their trunks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.compute import compute_table
from analysis.isoflop.profiles import akima_optimum, averaged, fit_parabola
from analysis.isoflop.seeds import (DISTINGUISHABLE, NOT_DISTINGUISHABLE, NOT_JUDGED, branch_table, compare,
                                    seed_summaries_from_runs)
from analysis.options import Options
from analysis.report.render import summary_of
from analysis.report.seeds_section import branches_section, seeds_line, seeds_section
from analysis.runs.table import TableError, load_table
from analysis.synth import CHINCHILLA_TRUE, chinchilla_loss, isoflop_grid

SEED_SD = 0.004     # a seed's offset, shared by every point it trains (init and data order)
POINT_SD = 0.0003   # what is left per run


def seeded_table(path, k: int = 3, seed: int = 0, n_per: int = 7) -> pd.DataFrame:
    """4 budgets × n_per sizes (×/÷ 8) on the Chinchilla surface, each point trained with seeds 0..k-1."""
    rng = np.random.default_rng(seed)
    N, D = isoflop_grid(budgets=np.geomspace(1e18, 1e20, 4), n_per=n_per, span=8)
    offsets = rng.normal(0, SEED_SD, k)
    rows = []
    for n, d in zip(N, D):
        truth = chinchilla_loss(n, d, CHINCHILLA_TRUE)
        for s in range(k):
            rows.append({"C": 6 * n * d, "N": n, "D": d, "seed": s,
                         "loss": truth * np.exp(offsets[s] + rng.normal(0, POINT_SD))})
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeds") / "seeded.csv"
    seeded_table(path)
    table = load_table(str(path), {"seed": "seed"})
    return table, compute_table(table, Options(n_boot=200, holdout=0))


def test_seeds_are_averaged_alike_by_both_estimators(seeded):
    table, res = seeded
    assert table.frame["seed"].tolist()[:3] == [0, 1, 2]
    (n_axis,) = [r for r in res.axes if r.axis == "params"]
    for o in n_axis.optima:
        runs = table.frame[table.frame["flop_budget"] == o.budget]
        ux, uy = averaged(np.log(runs["n_params"].to_numpy(float)), runs["loss"].to_numpy(float))
        assert o.replicates == 3 and len(o.run_ids) == 3 * ux.size
        assert o.fit.x_opt == pytest.approx(fit_parabola(ux, uy).x_opt, abs=1e-12)  # parabola through the means
        assert o.akima_x_opt == pytest.approx(akima_optimum(ux, uy)[0], abs=1e-12)   # spline through the means
        lo, hi = o.interval()   # the noise draws: the per-run SD pools the seeds' spread about their mean
        assert lo <= o.opt <= hi


def test_seed_noise_per_budget_and_paired_verdicts(seeded):
    _, res = seeded
    (s,) = res.seeds
    assert s.replicated and s.axis == "params" and len(s.budgets) == 4
    for b in s.budgets:
        assert (b.seeds_min, b.seeds_max, b.dof) == (3, 3, 2 * 7)
        # the SD across seeds at a point is the seeds' offsets' spread (plus the small per-run noise)
        assert 0.2 * SEED_SD < b.sd_rel < 3 * SEED_SD
        # neighbours ×/÷ 2 in size lose > 0.5 % of loss, far more than the per-run noise that pairing
        # leaves: every optimum beats its neighbours over the 3 paired seeds
        assert b.comparisons and all(c.method == "paired over 3 seeds" for c in b.comparisons)
        assert all(c.verdict == DISTINGUISHABLE and c.lo > 0 for c in b.comparisons), b
    summary = summary_of(res)
    line = next(h for h in summary["headline"] if h.startswith("optimum vs its grid neighbours"))
    assert "paired over seeds" in line and "distinguishable from" in line and "not distinguishable" not in line
    entry = summary["seeds"][0]
    assert entry["headline_interval"] == "noise draws" and entry["budgets"][0]["sd"] > 0
    n = summary["isoflop"]["params"]
    assert "redrawn" in n["interval_method"] and n["interval"][0] < n["exponent"] < n["interval"][1]
    text = seeds_section(res.seeds)
    assert "seed SD (%)" in text and "paired over 3 seeds" in text and "noise draws" in text


def test_compare_says_not_distinguishable_or_not_judged():
    rng = np.random.default_rng(1)
    seeds = np.arange(4.0)
    offsets = rng.normal(0, 0.01, 4)
    best = 3.0 + offsets + rng.normal(0, 1e-4, 4)
    same = 3.0 + offsets + rng.normal(0, 1e-4, 4)  # the same truth: the difference is noise
    c = compare((best, seeds), (same, seeds), 2.0)
    assert c.verdict == NOT_DISTINGUISHABLE and c.lo < 0 < c.hi and c.method == "paired over 4 seeds"
    worse = same + 0.002  # 2e-3 above, far beyond the 1e-4 left after pairing, within the seed offsets
    assert compare((best, seeds), (worse, seeds), 2.0).verdict == DISTINGUISHABLE
    # without seed values to pair on, Welch's interval sees the seed offsets and cannot tell them apart
    nan = np.full(4, np.nan)
    welch = compare((best, nan), (worse, nan), 2.0)
    assert welch.method.startswith("Welch") and welch.verdict == NOT_DISTINGUISHABLE
    one = compare((best[:1], seeds[:1]), (worse[:1], seeds[:1]), 2.0)
    assert one.verdict == NOT_JUDGED and not np.isfinite(one.lo)


def test_one_seed_cannot_be_judged_and_a_bad_seed_is_one_line(tmp_path):
    path = tmp_path / "one.csv"
    seeded_table(path, k=1, n_per=7)
    res = compute_table(load_table(str(path), {"seed": "seed"}), Options(n_boot=0, holdout=0))
    assert not res.seeds[0].replicated and all(b.verdict == NOT_JUDGED for b in res.seeds[0].budgets)
    line = next(h for h in summary_of(res)["headline"] if h.startswith("optimum vs its grid neighbours"))
    assert "cannot be judged — one seed per grid point" in line
    assert "One seed per grid point" in seeds_section(res.seeds)
    df = pd.read_csv(path, dtype=str)
    df.loc[3, "seed"] = "1.5"
    df.to_csv(path, index=False)
    with pytest.raises(TableError, match=r"row 4 .*'seed' \(--train-seed\).*not an integer seed"):
        load_table(str(path), {"seed": "seed"})
    with pytest.raises(TableError, match="name it with --train-seed"):
        load_table(str(path), {"seed": "seeds"})


def test_branched_runs_are_listed_with_their_trunks():
    runs = pd.DataFrame({
        "run": ["trunk (t1)", "b1 (h1)", "b2 (h2)", "plain (h3)"], "config_hash": ["t1", "h1", "h2", "h3"],
        "branch_trunk": [None, "t1", "t1", None], "branch_from_tokens": [np.nan, 6e6, 8e6, np.nan],
        "tokens": [1e7, 7e6, 9e6, 5e6], "mean_recurrence": [4, 4, 4, 2], "flop_budget": [1e12] * 4,
        "status": ["FINISHED"] * 4})
    t = branch_table(runs)
    assert t["run"].tolist() == ["b1 (h1)", "b2 (h2)"] and set(t["trunk directory"]) == {"runs/trunk-t1/"}
    text = branches_section(t)
    assert "2 branch(es) of 1 trunk(s)" in text and "| b1 (h1) | t1 | runs/trunk-t1/ |" in text
    assert branch_table(runs.drop(columns=["branch_trunk"])).empty and branches_section(branch_table(runs[3:])) is None


def test_two_loop_counts_on_two_seeds_are_compared_without_an_isoflop_fit():
    """isoflop-long on 2 seeds and 2 µ_rec: no budget has the 3 values an optimum needs, so the isoFLOP
    analysis is skipped, but the seed noise and µ_rec = 2 against µ_rec = 1 are still measured, paired over
    seeds (the losses are the branched run's, docs/pilot.md)."""
    runs = pd.DataFrame({"flop_budget": [2.4e13] * 4 + [1.2e13] * 2, "mean_recurrence": [1, 1, 2, 2, 1, 2],
                         "seed": pd.array([0, 1, 0, 1, 0, 0], dtype="Int64"),
                         "loss": [1.304419, 1.304431, 1.312067, 1.308940, 1.340814, 1.353137]})
    (s,) = seed_summaries_from_runs(runs)
    one, two = s.budgets
    assert one.budget == 1.2e13 and one.verdict == "cannot be judged"  # one seed there
    assert two.best == pytest.approx(1) and two.seeds_min == two.seeds_max == 2
    (c,) = two.comparisons
    assert c.diff == pytest.approx((0.007648 + 0.004509) / 2, abs=1e-6) and c.method == "paired over 2 seeds"
    assert c.lo < 0 < c.hi and two.verdict == "not distinguishable"
    line = seeds_line(s, False)
    assert "C = 2.4e+13" in line and "µ_rec = 1 not distinguishable from 2 (+0.00608" in line
    assert seed_summaries_from_runs(runs[runs["mean_recurrence"] == 1]) == []
