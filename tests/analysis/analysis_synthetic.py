"""Synthetic sweep data with known laws, shared by the analysis tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.synth import CHINCHILLA_TRUE, chinchilla_loss, isoflop_grid

GAMMA_MU = 0.4
K_MU = 3.0 / (1e18**GAMMA_MU)  # mu* = 3 at 1e18 FLOPs
MU_GRID = (1, 2, 4, 6, 8, 12, 16)
BUDGETS = (1e18, 2e18, 4e18, 8e18, 16e18)
CURVATURE = 0.05


def flops_per_token(mu: float) -> float:
    # prelude/coda cost plus a recurrent core paid mu times
    return 6 * (40e6 + 25e6 * mu)


def isoflop_frame(budgets=BUDGETS, mu_grid=MU_GRID, noise: float = 0.0,
                  seed: int = 0, mu_star=None) -> pd.DataFrame:
    """One row per run; loss is a parabola in ln(mu) around mu*(C) = K C^0.4."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        star = K_MU * C**GAMMA_MU if mu_star is None else mu_star(C)
        base = 3.0 - 0.1 * np.log10(C / 1e18)
        for mu in mu_grid:
            loss = base + CURVATURE * (np.log(mu) - np.log(star)) ** 2 + rng.normal(0, noise)
            fpt = flops_per_token(mu)
            rows.append({
                "run_id": f"c{C:.0e}-mu{mu}", "flop_budget": C, "mean_recurrence": mu,
                "tokens": int(C / fpt), "flops_per_token": int(fpt), "loss": loss,
                "model_name": "tiny", "model_kind": "parcae",
            })
    return pd.DataFrame(rows)


def saturating(T, L_inf: float, Z: float, z: float):
    return L_inf + Z * np.exp(-z * np.asarray(T, dtype=float))


def chinchilla_table(path, noise=0.003, jitter=0.01, seed=0, budgets=np.geomspace(1e18, 1e21, 5), n_per=9,
                     span=8):
    """Isoflop curves on the Chinchilla surface (a table for ``--csv``); C jittered so no two runs share
    a FLOP value."""
    rng = np.random.default_rng(seed)
    N, D = isoflop_grid(budgets=budgets, n_per=n_per, span=span)
    loss = chinchilla_loss(N, D, CHINCHILLA_TRUE) * np.exp(rng.normal(0, noise, N.size))
    C = 6 * N * D * np.exp(rng.normal(0, jitter, N.size))
    pd.DataFrame({"C": C, "N": N, "D": D, "loss": loss}).to_csv(path, index=False)
    return path
