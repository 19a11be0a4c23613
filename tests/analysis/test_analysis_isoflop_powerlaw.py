import numpy as np
import pytest

from analysis.isoflop import qc
from analysis.isoflop.optima import bootstrap_optima, isoflop_optima, isoflop_supported
from analysis.isoflop.profiles import FLAG_CURVATURE, FLAG_EDGE_HIGH, FLAG_TOO_FEW, fit_parabola
from analysis.isoflop.powerlaw import NoPowerLaw, fit_powerlaw, powerlaw_from_optima
from analysis_synthetic import GAMMA_MU, K_MU, isoflop_frame


def test_parabola_vertex_exact():
    x = np.log([1, 2, 4, 8, 16])
    y = 2.0 + 0.1 * (x - np.log(3.0)) ** 2
    fit = fit_parabola(x, y)
    assert fit.ok and fit.opt == pytest.approx(3.0, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0)


def test_edge_flag_reports_grid_edge_not_extrapolation():
    x = np.log([1, 2, 4, 8, 16])
    y = 2.0 + 0.1 * (x - np.log(40.0)) ** 2
    fit = fit_parabola(x, y)
    assert FLAG_EDGE_HIGH in fit.flags and not fit.ok
    assert fit.opt == pytest.approx(16.0)


def test_concave_and_too_few_flags():
    x = np.log([1, 2, 4, 8])
    fit = fit_parabola(x, 2.0 - 0.1 * (x - 1.0) ** 2)
    assert FLAG_CURVATURE in fit.flags
    assert fit.opt == pytest.approx(8.0)  # best observed point, which is an edge
    assert FLAG_EDGE_HIGH in fit.flags
    fit2 = fit_parabola(np.log([2, 4]), np.array([2.0, 1.9]))
    assert FLAG_TOO_FEW in fit2.flags and fit2.opt == pytest.approx(4.0)


def test_exponent_recovered_without_noise():
    optima = isoflop_optima(isoflop_frame(), "mean_recurrence")
    assert all(o.ok and o.fit.ok for o in optima)
    parabola = powerlaw_from_optima(optima, "parabola")  # the surface is an exact parabola in ln mu
    assert parabola.gamma == pytest.approx(GAMMA_MU, abs=1e-9)
    assert parabola.k == pytest.approx(K_MU, rel=1e-6)
    law = powerlaw_from_optima(optima)  # the shape-free estimate, interpolated on a 7-point grid
    assert law.estimator == "akima" and law.gamma == pytest.approx(GAMMA_MU, abs=0.03)


def test_exponent_recovered_with_noise_and_bootstrap_covers_truth():
    df = isoflop_frame(noise=2e-3, seed=1)
    optima = isoflop_optima(df, "mean_recurrence", n_boot=1000, rng=np.random.default_rng(0))
    law = powerlaw_from_optima(optima)
    lo, hi = law.boot_ci_gamma("runs")
    assert lo < GAMMA_MU < hi and hi - lo < 0.3
    parabola = powerlaw_from_optima(optima, "parabola")
    assert parabola.gamma == pytest.approx(GAMMA_MU, abs=0.05)
    for method in ("runs", "residuals"):
        lo, hi = parabola.boot_ci_gamma(method)
        assert lo < GAMMA_MU < hi and hi - lo < 0.3, method
    assert parabola.ci_gamma[0] < parabola.gamma < parabola.ci_gamma[1]
    band = law.band(np.array([1e18, 1e19]))
    assert band is not None and np.all(band[0] < band[1])


def test_residual_bootstrap_undefined_with_three_points():
    x = np.log([1.0, 4.0, 16.0])
    y = 2.0 + 0.1 * (x - 1.0) ** 2
    draws = bootstrap_optima(x, y, 100, np.random.default_rng(0), "residuals")
    assert np.all(np.isnan(draws))
    runs = bootstrap_optima(x, y, 100, np.random.default_rng(0), "runs")
    assert np.isfinite(runs).any() and np.isnan(runs).any()


def test_edge_budget_is_left_out_of_power_law():
    # last budget's optimum far above the grid
    df = isoflop_frame(mu_star=lambda C: 40.0 if C > 1e19 else K_MU * C**GAMMA_MU)
    optima = isoflop_optima(df, "mean_recurrence")
    assert [o.ok for o in optima] == [True, True, True, True, False]
    assert optima[-1].flags[0].code == qc.EDGE_HIGH
    law = powerlaw_from_optima(optima, "parabola")
    assert law.excluded_budgets == [16e18]
    assert law.gamma == pytest.approx(GAMMA_MU, abs=1e-9)


def test_no_silent_fallback_below_min_budgets():
    """Two clean budgets and three at the grid edge: no power law, and the reason names the flags."""
    df = isoflop_frame(mu_star=lambda C: 40.0 if C > 3e18 else K_MU * C**GAMMA_MU)
    optima = isoflop_optima(df, "mean_recurrence")
    assert sum(o.ok for o in optima) == 2
    with pytest.raises(NoPowerLaw, match="2 clean budget.*need 3.*edge_high"):
        powerlaw_from_optima(optima)
    two = powerlaw_from_optima(optima, min_budgets=2)
    assert len(two.C) == 2 and two.dof == 0
    kept = powerlaw_from_optima(optima, keep_flagged=True)
    assert len(kept.C) == 5 and any("--keep-flagged" in w for w in kept.warnings)


def test_two_and_three_budget_warnings():
    two = fit_powerlaw(np.array([1e18, 1e19]), np.array([3.0, 7.5]))
    assert two.dof == 0 and np.isnan(two.se_gamma)
    assert any("2 budgets" in w for w in two.warnings)
    three = fit_powerlaw(np.array([1e18, 1e19, 1e20]), np.array([3.0, 7.0, 20.0]))
    assert three.dof == 1 and any("3 budgets" in w for w in three.warnings)


def test_bootstrap_is_fast():
    import time
    df = isoflop_frame(noise=2e-3)
    t0 = time.perf_counter()
    for axis in ("mean_recurrence", "tokens"):
        powerlaw_from_optima(isoflop_optima(df, axis, n_boot=1000))
    assert time.perf_counter() - t0 < 15


def test_supported():
    ok, _ = isoflop_supported(isoflop_frame(budgets=(1e18, 2e18)))
    assert ok
    ok, why = isoflop_supported(isoflop_frame(budgets=(1e18,)))
    assert not ok and "need 2" in why


def test_headline_says_when_looping_does_not_pay():
    from analysis.isoflop.approach2 import approach2
    from analysis.options import Options
    from analysis.report.summary import headline
    r = approach2(isoflop_frame(mu_star=lambda C: 0.5), "g", "mean_recurrence", Options(n_boot=0),
                  np.random.default_rng(0))
    assert r.law is None
    regime, line = headline([r], {}, [], {"used": 35, "excluded": {}})[:2]
    # First the regime and which sweep measures the trend, then the exponent and why it is not identified.
    assert regime.startswith("regime: looping does not pay at any budget") and "SWEEP=isoflop-long" in regime
    assert line.startswith("µ_rec* ∝ C^γ: not identified — 0 clean budget(s)")
    assert "looping does not pay" in line and "paper: 0.40" in line
