"""Outlier sensitivity of a law fit: a few points carrying the fit are named."""
import numpy as np

from analysis.laws.bootstrap import bootstrap_law
from analysis.laws.point_fit import fit_law
from analysis.laws.diagnostics import n_dropped, outlier_sensitivity
from analysis.synth import CHINCHILLA_TRUE, random_chinchilla_design


def test_planted_outliers_are_named_and_a_clean_fit_is_quiet():
    d = random_chinchilla_design(80, CHINCHILLA_TRUE, noise=0.005, rng=np.random.default_rng(3))
    d.ids = [f"run{i}" for i in range(d.n)]
    fit = fit_law("chinchilla", d)
    boot = bootstrap_law("chinchilla", d, n_boot=40, seed=0, inline=True)
    assert outlier_sensitivity(fit, boot, d, 0.95) == []
    bad = np.argsort(d.raw["D"])[:n_dropped(d.n)]  # the smallest-D points carry B and β
    d.loss[bad] *= 1.25
    fit = fit_law("chinchilla", d)
    boot = bootstrap_law("chinchilla", d, n_boot=40, seed=0, inline=True)
    (warning,) = outlier_sensitivity(fit, boot, d, 0.95, {f"run{i}": f"name{i}" for i in range(d.n)})
    assert warning.startswith("outlier sensitivity") and all(f"name{i}" in warning for i in bad)
