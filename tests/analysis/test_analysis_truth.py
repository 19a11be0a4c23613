"""Known truth: the shape-free isoFLOP estimate's run-bootstrap interval covers the true exponent, and
the recurrence law's allocation exponents match the minimum of its own surface."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.laws.allocation import (chinchilla_allocation, optimal_loops, recurrence_allocation,
                                 recurrence_local_exponents)
from analysis.isoflop.groups import isoflop_group
from analysis.options import Options
from analysis.synth import ASYMMETRIC_TRUE, RECURRENCE_TRUE, chinchilla_loss


def optimal_n(p, C):
    """N*(C) of L = E + A N^-α + B D^-β under C = 6ND (Hoffmann et al. 2022, Eq. 4)."""
    a, b = p["alpha"], p["beta"]
    G = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b))


def _table(p, noise, seed, budgets=np.geomspace(1e18, 1e21, 5)):
    """9 sizes per budget over ×/÷ 6 around the true optimum, the grid shifted by a random offset."""
    rng = np.random.default_rng(seed)
    N = np.concatenate([optimal_n(p, C) * np.geomspace(1 / 6, 6, 9) * np.exp(rng.uniform(-0.3, 0.3))
                        for C in budgets])
    C = np.repeat(budgets, 9)
    D = C / (6 * N)
    loss = chinchilla_loss(N, D, p) * np.exp(rng.normal(0, noise, N.size))
    return pd.DataFrame({"flop_budget": C, "n_params": N, "tokens": D, "loss": loss,
                         "run_id": [f"r{i}" for i in range(N.size)]})


def test_interval_covers_the_true_exponent_on_an_asymmetric_surface():
    """α/β = 3 (a parabola is biased here): 15 noisy replicate tables, 200 draws each, through the QC
    stage, the estimator choice and the noise draws (the small case of benchmarks/isoflop_coverage.py)."""
    p = ASYMMETRIC_TRUE
    truth = p["beta"] / (p["alpha"] + p["beta"])
    covered, width, n = 0, [], 0
    for seed in range(15):
        df = _table(p, 0.003, seed).assign(mean_recurrence=np.nan, model_name="t", model_kind="table")
        g = isoflop_group("t", df, Options(n_boot=200, holdout=0), ("params",), np.random.default_rng(seed))
        if not g.results or g.results[0].law is None:
            continue
        lo, hi = g.results[0].interval
        n += 1
        covered += lo <= truth <= hi
        width.append(hi - lo)
    assert n >= 12
    assert covered / n >= 0.8, (covered, n)
    assert np.median(width) < 0.2


def test_chinchilla_allocation():
    a, b = chinchilla_allocation(0.34, 0.28)
    assert a == pytest.approx(0.28 / 0.62) and b == pytest.approx(0.34 / 0.62)


@pytest.mark.parametrize("n_once", [0.0, 2e6, 2e7])
def test_recurrence_allocation_exponents_match_the_surface(n_once):
    """r*(C) found by minimising the law itself at fixed C; its log-slope is the derived exponent."""
    p, n_rec = RECURRENCE_TRUE, 5e7
    Cs = np.geomspace(3e18, 3.3e18, 2)
    rs = np.array([optimal_loops(p, n_once, n_rec, C) for C in Cs])
    Ds = Cs / (6 * (n_once + rs * n_rec))
    slope_r = np.diff(np.log(rs))[0] / np.diff(np.log(Cs))[0]
    slope_d = np.diff(np.log(Ds))[0] / np.diff(np.log(Cs))[0]
    alloc = recurrence_allocation(p, n_once, n_rec, float(np.sqrt(Cs[0] * Cs[1])))
    assert alloc["mu_opt"] == pytest.approx(slope_r, abs=2e-3)
    assert alloc["b_opt"] == pytest.approx(slope_d, abs=2e-3)
    a, b, phi = p["alpha"], p["beta"], p["phi"]
    if n_once == 0:  # the closed form of the issue: not α/(α+β)
        assert alloc["b_opt"] == pytest.approx(a * phi / (a * phi + b), abs=1e-6)
        assert alloc["b_opt"] != pytest.approx(a / (a + b), abs=0.05)
    g_r, g_d = recurrence_local_exponents(a, b, phi, n_once, n_rec, alloc["r_opt"])
    assert (g_r, g_d) == pytest.approx((alloc["mu_opt"], alloc["b_opt"]))
