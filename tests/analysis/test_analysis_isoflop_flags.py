"""IsoFLOP quality flags and the Akima-spline optimum."""
import numpy as np
import pandas as pd

from analysis import isoflop


def test_akima_finds_the_minimum_of_a_smooth_curve():
    x = np.log([1, 2, 3, 4, 6, 8, 12])
    true = np.log(3.5)
    y = 2.0 + 0.3 * (x - true) ** 2 + 0.05 * (x - true) ** 3  # asymmetric: a parabola is biased
    ax, ay = isoflop.akima_optimum(x, y)
    assert abs(ax - true) < 0.06
    assert ay <= y.min() + 1e-12


def test_akima_averages_replicates_and_needs_three_points():
    x = np.log([1, 1, 2, 4])
    y = np.array([3.0, 3.2, 2.0, 2.5])
    assert np.isfinite(isoflop.akima_optimum(x, y)[0])
    assert np.isnan(isoflop.akima_optimum(np.log([1, 1, 2]), y[:3])[0])


def test_off_centre_vertex_is_flagged_but_still_used():
    x = np.linspace(0, 4, 7)
    y = 2.0 + 0.2 * (x - 0.5) ** 2  # vertex at 12.5 % of the span: inside, but off-centre
    fit = isoflop.fit_parabola(x, y + np.array([0, 1, -1, 1, -1, 1, 0]) * 1e-5)
    assert isoflop.FLAG_OFF_CENTRE in fit.flags
    assert fit.ok


def test_centred_convex_grid_has_no_flags():
    x = np.linspace(0, 4, 7)
    fit = isoflop.fit_parabola(x, 2.0 + 0.2 * (x - 2.0) ** 2 + np.array([0, 1, -1, 1, -1, 1, 0]) * 1e-4)
    assert fit.flags == [] and fit.ok


def test_weak_curvature_is_flagged_and_not_ok():
    x = np.linspace(0, 3, 8)
    wiggle = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 5e-3  # scatter far above the curvature
    fit = isoflop.fit_parabola(x, 2.0 + 2e-3 * (x - 1.5) ** 2 + wiggle)
    assert fit.coef[0] > 0 and isoflop.FLAG_CURVATURE not in fit.flags
    assert isoflop.FLAG_WEAK in fit.flags and not fit.ok
    tiny = isoflop.fit_parabola(x[:3], 2.0 + 1e-5 * (x[:3] - 0.4) ** 2)  # 3 points: relative-rise test
    assert isoflop.FLAG_WEAK in tiny.flags


def test_parabola_akima_disagreement_is_flagged():
    x = np.log([1, 2, 4, 8, 16, 32, 64])
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 5.0])  # a cliff at the end drags the parabola left
    df = pd.DataFrame({"flop_budget": 1e12, "mean_recurrence": np.exp(x), "loss": y,
                       "run_id": [f"r{i}" for i in range(7)]})
    (opt,) = isoflop.isoflop_optima(df, "mean_recurrence")
    assert abs(opt.akima_x_opt - np.log(32)) < 0.3
    assert isoflop.FLAG_DISAGREE in opt.fit.flags
    table = isoflop.optima_table([opt])
    assert table.loc[0, "akima_optimum"] == opt.akima_opt
