"""Synthetic sweep data with known laws, shared by the analysis tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
