import numpy as np
import pandas as pd
import pytest

from analysis.testtime.saturation import fit_testtime, huber_mean, fit_testtime_runs, tabulate_testtime
from analysis_synthetic import saturating

T_GRID = np.array([1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24])


def test_recovers_known_parameters_from_noisy_data():
    rng = np.random.default_rng(0)
    truth = dict(L_inf=3.2, Z=1.5, z=0.35)
    L = saturating(T_GRID, **truth) * np.exp(rng.normal(0, 3e-4, T_GRID.size))
    fit = fit_testtime(T_GRID, L)
    assert fit.L_inf == pytest.approx(truth["L_inf"], abs=5e-3)
    assert fit.Z == pytest.approx(truth["Z"], rel=0.05)
    assert fit.z == pytest.approx(truth["z"], rel=0.05)
    assert fit.z_identified and fit.r2 > 0.999
    assert fit.huber < 1e-6
    assert abs(fit.L_inf - truth["L_inf"]) < 4 * fit.se_L_inf + 1e-3


def test_exact_data_exact_fit():
    L = saturating(T_GRID, 2.9, 0.8, 0.6)
    fit = fit_testtime(T_GRID, L)
    np.testing.assert_allclose([fit.L_inf, fit.Z, fit.z], [2.9, 0.8, 0.6], rtol=1e-6)


def test_flat_curve_flagged():
    rng = np.random.default_rng(1)
    fit = fit_testtime(T_GRID, 3.0 + rng.normal(0, 1e-4, T_GRID.size))
    assert not fit.z_identified
    assert any(f.startswith("flat") for f in fit.flags)


def test_early_saturation_flagged():
    # decays completely between T=1 and T=2
    fit = fit_testtime(T_GRID, saturating(T_GRID, 3.0, 5.0, 15.0))
    assert not fit.z_identified


def test_no_plateau_flagged():
    T = np.array([1, 2, 3, 4])
    fit = fit_testtime(T, saturating(T, 3.0, 1.0, 0.05))
    assert not fit.z_identified
    assert any("plateau" in f or "bound" in f for f in fit.flags)


def test_too_few_points_not_fitted():
    fit = fit_testtime(np.array([1, 2]), np.array([3.5, 3.2]))
    assert not fit.fitted and fit.flags


def test_huber_is_quadratic_inside_delta():
    r = np.array([1e-4, -2e-4])
    assert huber_mean(r) == pytest.approx(np.mean(0.5 * r**2))


def test_table_gap_against_loss_at_mu():
    L = saturating(T_GRID, 3.0, 1.0, 0.5)
    df = pd.DataFrame({"run_id": ["a"], "model_name": ["m"], "mean_recurrence": [4],
                       "loss": [float(saturating(4, 3.0, 1.0, 0.5))],
                       **{f"loss_T{t}": [v] for t, v in zip(T_GRID, L)}})
    fits = fit_testtime_runs(df)
    table = tabulate_testtime(df, fits)
    expected = 100 * (3.0 - df["loss"][0]) / df["loss"][0]
    assert table["gap_pct"][0] == pytest.approx(expected, rel=1e-4)


def test_three_values_of_T_are_an_exact_fit_not_identified():
    from analysis.testtime.saturation import FLAG_EXACT, fit_testtime
    T = np.array([1.0, 2.0, 4.0])
    fit = fit_testtime(T, saturating(T, 3.0, 0.5, 0.8))
    assert FLAG_EXACT in fit.flags and not fit.z_identified and np.isnan(fit.T_star)
    dense = np.arange(1.0, 13.0)
    fit = fit_testtime(dense, saturating(dense, 3.0, 0.5, 0.8))
    assert fit.z_identified and fit.T_star == pytest.approx(np.log(0.5 / 3e-3) / 0.8, rel=1e-3)
    assert set(fit.intervals()) == {"L_inf", "z"}


def test_a_loss_that_only_rises_with_T_is_no_decay_not_saturation():
    """A run trained at µ_rec = 1 gets worse with every extra loop: the fit has nothing to decay (Z ≈ 0),
    which is not the same as saturating before T = 2, and z's lower bound means nothing there."""
    from analysis.testtime.saturation import FLAG_NO_DECAY
    T = np.array([1.0, 2, 3, 4, 8, 16])
    L = 1.915 + 0.04 * (1 - np.exp(-0.5 * (T - 1)))
    fit = fit_testtime(T, L)
    assert fit.flags[0].startswith(FLAG_NO_DECAY) and not fit.z_identified
    assert not any(f.startswith(("saturates", "z at its bound")) for f in fit.flags)
    assert any(f.startswith("non-monotone") for f in fit.flags)
    fit = fit_testtime(T_GRID, saturating(T_GRID, 3.0, 50.0, 8.0))  # a real early saturation stays one
    assert any(f.startswith("saturates") for f in fit.flags)
