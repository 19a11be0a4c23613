"""IsoFLOP quality control: each named flag fires on a constructed case and not on a clean one."""
import numpy as np
import pandas as pd
import pytest

from analysis.estimation import t_critical
from analysis.isoflop import optima, qc
from analysis.isoflop.optima import budget_optimum
from analysis.isoflop.profiles import akima_optimum, fit_parabola

X9 = np.log(np.geomspace(1, 256, 9))


def orthogonal_noise(x, seed, rms):
    """Noise orthogonal to (x², x, 1): the parabola's coefficients are exactly the noise-free ones."""
    V = np.vander(x, 3)
    r = np.random.default_rng(seed).normal(size=x.size)
    r -= V @ np.linalg.lstsq(V, r, rcond=None)[0]
    return rms * r / np.sqrt(np.mean(r**2))


def flags(x, y, axis="params"):
    o = budget_optimum(1e18, axis, np.exp(x), y, [f"r{i}" for i in range(len(x))])
    return [f.code for f in o.flags], [p["code"] for p in o.points_excluded], o


CLEAN = 3 + 0.05 * (X9 - X9.mean()) ** 2 + orthogonal_noise(X9, 0, 1e-3)


def test_clean_budget_has_no_flags_and_an_interior_estimate():
    budget, points, o = flags(X9, CLEAN)
    assert budget == [] and points == [] and o.ok
    assert abs(o.x_opt - X9.mean()) < 0.3 and o.fit.t_curvature > t_critical(o.fit.dof)


def test_akima_finds_the_minimum_of_an_asymmetric_curve_where_the_parabola_is_biased():
    x = np.log([1, 2, 3, 4, 6, 8, 12])
    true = np.log(3.5)
    y = 2.0 + 0.3 * (x - true) ** 2 + 0.05 * (x - true) ** 3
    ax, ay = akima_optimum(x, y)
    assert abs(ax - true) < 0.06 and ay <= y.min() + 1e-12
    assert abs(fit_parabola(x, y).x_opt - true) > abs(ax - true)


def test_akima_averages_replicates_and_needs_three_points():
    y = np.array([3.0, 3.2, 2.0, 2.5])
    assert np.isfinite(akima_optimum(np.log([1, 1, 2, 4]), y)[0])
    assert np.isnan(akima_optimum(np.log([1, 1, 2]), y[:3])[0])


def test_weak_curvature_uses_the_t_quantile_for_the_residual_dof():
    """The issue's case: t = 2.8 on 3 dof passed a fixed t < 2 rule; the 97.5 % quantile is 3.18."""
    x = np.linspace(0, 2.5, 6)
    r = orthogonal_noise(x, 1, 1e-3)
    V = np.vander(x, 3)
    se_a = np.sqrt(r @ r / 3 * np.linalg.inv(V.T @ V)[0, 0])
    codes, _, o = flags(x, 3 + 2.8 * se_a * (x - 1.25) ** 2 + r)
    assert o.fit.dof == 3 and o.fit.t_curvature == pytest.approx(2.8)
    assert qc.WEAK_CURVATURE in codes and not o.ok
    assert "3.18" in o.reasons[0]
    strong = flags(x, 3 + 4.0 * se_a * (x - 1.25) ** 2 + r)[0]
    assert qc.WEAK_CURVATURE not in strong


def test_curvature_resting_on_one_point_is_flagged():
    x = np.arange(7) * 0.5
    y = 3 + 0.004 * (x - 1.5) ** 2 + np.random.default_rng(140).normal(0, 1e-3, x.size)
    codes, _, o = flags(x, y)
    # a warning by default: leaving such budgets out was measured not to help (analysis/isoflop/qc_measure.py)
    assert codes == [qc.SINGLE_POINT] and "curvature" in o.warnings[0] and o.ok
    assert o.fit.t_curvature > t_critical(o.fit.dof)  # passes with every point, not without one
    strict = budget_optimum(1e18, "params", np.exp(x), y, [f"r{i}" for i in range(len(x))],
                            cfg=qc.QCConfig(exclude_single_point=True))
    assert not strict.ok and strict.reasons[0].startswith(qc.SINGLE_POINT)


def test_optimum_resting_on_one_point_is_flagged():
    y = np.array([3.6, 3.4, 3.2, 3.1, 2.9, 3.08, 3.06, 3.04])
    codes, _, o = flags(np.arange(8) * 0.5, y)
    assert qc.SINGLE_POINT in codes and "grid edge" in o.warnings[0]


@pytest.mark.parametrize("centre, code", [(7.0, qc.EDGE_HIGH), (-1.5, qc.EDGE_LOW)])
def test_optimum_at_the_grid_edge(centre, code):
    codes, _, o = flags(X9, 3 + 0.05 * (X9 - centre) ** 2 + orthogonal_noise(X9, 0, 1e-3))
    assert codes[0] == code and not o.ok


def test_lower_edge_at_one_loop_says_looping_does_not_pay():
    x = np.log([1, 2, 4, 8, 16, 32])
    _, _, o = flags(x, 3 + 0.05 * (x + 1) ** 2, "mean_recurrence")
    assert o.flags[0].code == qc.EDGE_LOW and "looping does not pay" in o.flags[0].reason


def test_off_centre_optimum_is_flagged_and_excluded():
    codes, _, o = flags(X9, 3 + 0.05 * (X9 - X9[1] + 0.3) ** 2 + orthogonal_noise(X9, 0, 1e-3))
    assert codes == [qc.OFF_CENTRE] and not o.ok


def test_too_few_points():
    codes, _, o = flags(X9[:2], CLEAN[:2])
    assert codes == [qc.TOO_FEW] and not o.ok


def test_parabola_akima_disagreement_against_the_grid_step():
    x = np.log([1, 2, 4, 8, 16, 32, 64])
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 5.0])  # a cliff at the end drags the parabola left
    codes, _, o = flags(x, y)
    assert abs(o.akima_x_opt - np.log(32)) < 0.3
    assert qc.DISAGREE in codes
    # a warning by default (the parabola is biased: no measured reason to drop the budget) ...
    assert not any(r.startswith(qc.DISAGREE) for r in o.reasons)
    assert any(w.startswith(qc.DISAGREE) and "warning" in w for w in o.warnings)
    # ... and an exclusion only when asked (--qc exclude_disagreement=true)
    strict = budget_optimum(1e18, "params", np.exp(x), y, [f"r{i}" for i in range(len(x))],
                            cfg=qc.parse_qc(["exclude_disagreement=true"]))
    assert not strict.ok and any(r.startswith(qc.DISAGREE) for r in strict.reasons)


def test_outlier_is_left_out_and_named():
    y = CLEAN.copy()
    y[3] += 0.05
    codes, points, o = flags(X9, y)
    assert points == [qc.OUTLIER] and o.points_excluded[0]["run_id"] == "r3"
    assert "r3" not in o.run_ids and codes == []


def test_exact_and_near_duplicates():
    _, points, o = flags(np.append(X9, X9[4]), np.append(CLEAN, CLEAN[4]))
    assert points == [qc.EXACT_DUPLICATE] and o.points_excluded[0]["run_id"] == "r9"
    _, points, o = flags(np.append(X9, X9[4] + 0.01), np.append(CLEAN, CLEAN[4] + 1e-3))
    assert points == [qc.NEAR_DUPLICATE]
    # replicates (same size, different loss) are averaged, not flagged
    _, points, o = flags(np.append(X9, X9[4]), np.append(CLEAN, CLEAN[4] + 2e-3))
    assert points == [] and "replicate" in o.notes[0]


def test_keep_flagged_keeps_points_but_still_reports_them():
    y = CLEAN.copy()
    y[3] += 0.05
    o = budget_optimum(1e18, "params", np.exp(X9), y, [f"r{i}" for i in range(9)], keep_flagged=True)
    assert len(o.run_ids) == 9 and "kept" in o.points_excluded[0]["reason"]


def test_optima_table_marks_flags():
    df = pd.DataFrame({"flop_budget": 1e12, "n_params": np.exp(X9), "loss": CLEAN,
                       "run_id": [f"r{i}" for i in range(9)]})
    (opt,) = optima.isoflop_optima(df, "params", n_boot=50)
    t = optima.optima_table([opt])
    assert t.loc[0, "optimum"] == opt.opt and bool(t.loc[0, "ok"])
    lo, hi = opt.interval()
    assert lo <= opt.opt <= hi


def test_mu_rec_one_is_a_bound_not_an_off_centre_grid():
    """An optimum between µ_rec = 1 and 2 with the grid starting at 1 is not off-centre on that axis."""
    x = np.log([1, 2, 3, 4, 6, 8])
    y = 3 + 0.05 * (x - np.log(1.8)) ** 2 + orthogonal_noise(x, 0, 1e-4)
    assert flags(x, y, "mean_recurrence")[0] == []
    assert flags(x, y, "tokens")[0] == [qc.OFF_CENTRE]


def test_curvature_is_tested_after_outlier_removal_even_when_points_are_kept():
    """A clearly curved budget with one wild point at its minimum: with the point, the parabola's
    curvature is not significant; the verdict is on the points left after removing it."""
    y = CLEAN.copy()
    y[4] += 0.5
    assert not fit_parabola(X9, y).t_curvature > t_critical(6)  # the outlier alone would fail the test
    for keep in (False, True):
        o = budget_optimum(1e18, "params", np.exp(X9), y, [f"r{i}" for i in range(9)], keep_flagged=keep)
        assert [p["code"] for p in o.points_excluded] == [qc.OUTLIER]
        assert qc.WEAK_CURVATURE not in [f.code for f in o.flags], (keep, o.flags)
