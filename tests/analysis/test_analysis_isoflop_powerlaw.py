import numpy as np
import pytest

from analysis.isoflop import qc
from analysis.isoflop.approach2 import approach2
from analysis.isoflop.optima import isoflop_supported
from analysis.options import Options
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


def _axis(df, axis="mean_recurrence", n_boot=0, **kw):
    return approach2(df, "g", axis, Options(n_boot=n_boot, **kw), np.random.default_rng(0))


def test_exponent_recovered_without_noise():
    r = _axis(isoflop_frame())
    assert all(o.ok for o in r.optima)
    parabola = r.law if r.law.estimator == "parabola" else r.alternative  # the surface is an exact parabola
    assert parabola.gamma == pytest.approx(GAMMA_MU, abs=1e-9)
    assert parabola.k == pytest.approx(K_MU, rel=1e-6)
    assert r.alternative.gamma == pytest.approx(GAMMA_MU, abs=0.03)


def test_exponent_recovered_with_noise_and_interval_covers_truth():
    r = _axis(isoflop_frame(noise=2e-3, seed=1), n_boot=1000)
    lo, hi = r.interval
    assert lo < GAMMA_MU < hi and hi - lo < 0.3
    assert r.law.gamma == pytest.approx(GAMMA_MU, abs=0.05)
    assert r.law.ci_gamma[0] < r.law.gamma < r.law.ci_gamma[1]
    band = r.law.band(np.array([1e18, 1e19]))
    assert band is not None and np.all(band[0] < band[1])
    assert all(np.isfinite(o.interval()).all() for o in r.optima)


def test_edge_budget_is_left_out_of_power_law():
    # last budget's optimum far above the grid: never a clipped vertex as an estimate
    r = _axis(isoflop_frame(mu_star=lambda C: 40.0 if C > 1e19 else K_MU * C**GAMMA_MU))
    assert [o.ok for o in r.optima] == [True, True, True, True, False]
    assert r.optima[-1].flags[0].code == qc.EDGE_HIGH
    assert r.law.excluded_budgets == [16e18]
    assert r.law.gamma == pytest.approx(GAMMA_MU, abs=0.03)


def test_no_silent_fallback_below_min_budgets():
    """Two clean budgets and three at the grid edge: no power law, and the reason names the flags."""
    df = isoflop_frame(mu_star=lambda C: 40.0 if C > 3e18 else K_MU * C**GAMMA_MU)
    r = _axis(df)
    assert sum(o.ok for o in r.optima) == 2 and r.law is None
    assert "2 clean budget" in r.reason and "need 3" in r.reason and "edge_high" in r.reason
    with pytest.raises(NoPowerLaw):
        powerlaw_from_optima(r.optima, r.estimator)
    two = powerlaw_from_optima(r.optima, r.estimator, min_budgets=2)
    assert len(two.C) == 2 and two.dof == 0
    kept = powerlaw_from_optima(r.optima, r.estimator, keep_flagged=True)
    assert len(kept.C) == 5 and any("--keep-flagged" in w for w in kept.warnings)


def test_two_and_three_budget_warnings():
    two = fit_powerlaw(np.array([1e18, 1e19]), np.array([3.0, 7.5]))
    assert two.dof == 0 and np.isnan(two.se_gamma)
    assert any("2 budgets" in w for w in two.warnings)
    three = fit_powerlaw(np.array([1e18, 1e19, 1e20]), np.array([3.0, 7.0, 20.0]))
    assert three.dof == 1 and any("3 budgets" in w for w in three.warnings)


def test_supported():
    ok, _ = isoflop_supported(isoflop_frame(budgets=(1e18, 2e18)))
    assert ok
    ok, why = isoflop_supported(isoflop_frame(budgets=(1e18,)))
    assert not ok and "need 2" in why


def test_headline_says_when_looping_does_not_pay():
    from analysis.report.summary import headline
    df = isoflop_frame(mu_star=lambda C: 0.5)
    r = _axis(df)
    assert r.law is None
    regime, line = headline([r], {}, [], {"used": 35, "excluded": {}}, runs_at_one=[1e18, 2e18])[:2]
    # First what this sweep measured (its budgets at µ_rec = 1), then the exponent and why not identified.
    assert regime.startswith("regime: at 2 budget(s) of this sweep (C = 1e+18, 2e+18) the lowest loss is at µ_rec = 1")
    assert "docs/pilot.md" in regime and "few hundred" not in regime
    assert line.startswith("µ_rec* ∝ C^γ: not identified — 0 clean budget(s)")
    assert "looping does not pay" in line and "paper: 0.40" in line
