"""The warm-start bootstrap (analysis.laws.bootstrap): same resample optima as the cold multi-start reference,
its basin check, and a default-sweep-sized bootstrap that stays on its fast path."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.laws.bootstrap import _grid_scores, bootstrap_law, bootstrap_weights, lm_refine
from analysis.laws.point_fit import (BOOT_GRID_STRIDE, FitSettings, _bound_arrays, _bounds, fit_law, objective,
                                     varpro_starts)
from analysis.laws.forms import CHINCHILLA, design_from_frame
from analysis.synth import chinchilla_design

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.bench_fit_store import default_sweep_store  # noqa: E402


def test_warm_bootstrap_matches_cold_multistart():
    d = chinchilla_design(noise=0.01, rng=np.random.default_rng(7), n_per=6,
                          budgets=np.geomspace(1e18, 1e21, 4))
    warm = bootstrap_law(CHINCHILLA, d, n_boot=30, seed=3, progress=lambda n: None)
    cold = bootstrap_law(CHINCHILLA, d, n_boot=30, seed=3, inline=True, warm=False,
                         progress=lambda n: None)
    assert warm.n_cold == 0 and warm.success.all()
    for k in ("alpha", "beta", "E", "a_opt"):
        np.testing.assert_allclose(warm.samples[k], cold.samples[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_lm_refine_reaches_the_lbfgs_optimum_from_a_perturbed_start():
    d = chinchilla_design(noise=0.01, rng=np.random.default_rng(1), n_per=6)
    ref = fit_law(CHINCHILLA, d)
    X, lnL, w = d.X(), np.log(d.loss), np.ones(d.n)
    s = FitSettings()
    scale = s.effective_scale(d.n)
    lo = np.array([-np.inf, -np.inf, 0.0, -np.inf, 0.0])
    hi = np.array([lnL.min(), np.inf, 5.0, np.inf, 5.0])
    th, f, conv, it = lm_refine(CHINCHILLA, ref.theta + 0.05, X, lnL, w, lo, hi, s.delta, scale,
                                s.gtol_rel * scale * s.delta**2)
    assert conv and it < 100
    assert f / scale == pytest.approx(ref.objective, rel=1e-8)
    np.testing.assert_allclose(th, ref.theta, atol=1e-5)
    assert f == pytest.approx(objective(th, CHINCHILLA, X, lnL, w, s.delta, scale)[0])


def test_grid_scores_are_the_variable_projection_scores():
    """The basin check scores the same grid as the multi-start's starts (all weights 1 here)."""
    d = chinchilla_design(noise=0.01, rng=np.random.default_rng(2), n_per=6)
    X, L = d.X(), d.loss
    best = varpro_starts(CHINCHILLA, X, L, np.ones(d.n), 1, BOOT_GRID_STRIDE)[0]
    s = FitSettings()
    expected = objective(best, CHINCHILLA, X, np.log(L), np.ones(d.n), s.delta, 1.0)[0]
    got = _grid_scores(CHINCHILLA, X, L, np.ones((2, d.n)), BOOT_GRID_STRIDE, s.delta)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_default_sweep_sized_bootstrap_stays_on_the_fast_path(tmp_path):
    """12 runs (conf/sweep/isoflop.yaml) × 200 resamples of the Parcae law: every resample refitted warm,
    and Levenberg–Marquardt converges for most of them, leaving few to the slow L-BFGS-B finish (the
    time itself is measured by make bench-fit, not asserted here)."""
    from analysis.runs import load_runs, split_usable
    uri = default_sweep_store(tmp_path)
    usable, _ = split_usable(load_runs(uri, "parcae", "isoflop"))
    d = design_from_frame(usable, "parcae")
    boot = bootstrap_law("parcae", d, n_boot=200, seed=0, progress=lambda n: None)
    assert boot.n_boot == 200 and boot.success.mean() > 0.9
    assert boot.n_cold == 0 and boot.n_finished <= 40  # measured: 19 of 200
    lo, hi = boot.interval("beta", 0.95)
    assert lo < 0.3 < hi  # the store's true beta


def test_a_vanishing_term_is_held_at_its_floor():
    """E = 0 in truth: the fit puts ln E at its floor (forms.LOG_TINY). Levenberg–Marquardt must hold it
    there and converge; free, its ~exp(-40) curvature made every step too long, so every resample was
    rejected step after step and fell to L-BFGS-B (the analysis of the default sweep slowed down 1.4×)."""
    from analysis.synth import CHINCHILLA_TRUE
    truth = dict(CHINCHILLA_TRUE, E=0.0)
    d = chinchilla_design(truth, rng=np.random.default_rng(3), n_per=6, budgets=np.geomspace(1e18, 1e21, 4))
    fit = fit_law(CHINCHILLA, d)
    assert any(f.startswith("E ≈ 0") for f in fit.flags)
    X, lnL, s = d.X(), np.log(d.loss), FitSettings()
    lo, hi = (np.array(b) for b in _bound_arrays(_bounds(CHINCHILLA, lnL)))
    for w in bootstrap_weights(d, 20, np.random.default_rng(0)):
        scale = s.effective_scale(w.sum())
        th, _, conv, it = lm_refine(CHINCHILLA, fit.theta, X, lnL, w, lo, hi, s.delta, scale,
                                    s.gtol_rel * scale * s.delta**2)
        # measured: at most 5 steps each; free, one resample hit the 200-step cap and three took 14-42
        assert conv and it <= 10 and th[0] == lo[0]
    boot = bootstrap_law(CHINCHILLA, d, n_boot=50, seed=1, inline=True, fit=fit, progress=lambda n: None)
    assert boot.success.all() and boot.n_cold == 0 and boot.n_finished == 0
    np.testing.assert_allclose(np.median(boot.samples["alpha"]), truth["alpha"], rtol=1e-3)


def test_progress_prints_plain_lines_off_a_terminal(monkeypatch):
    """Under SLURM, nohup or a pipe each stage prints start, periodic done/total with ETA, and end."""
    import io

    from analysis import progress
    stream = io.StringIO()
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "_enabled", True)
    st = progress.Stage("bootstrap parcae", 4, "resamples", stream=stream)
    st.update(2)
    st.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[analysis] bootstrap parcae: started (4 resamples)"
    assert lines[1].startswith("[analysis] bootstrap parcae: 2/4 resamples") and "ETA" in lines[1]
    assert lines[2].startswith("[analysis] bootstrap parcae: done in")
    progress.enable(False)
    quiet = io.StringIO()
    progress.Stage("x", 1, stream=quiet).close()
    assert quiet.getvalue() == ""
