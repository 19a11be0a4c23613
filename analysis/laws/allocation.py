"""Compute-optimal allocation exponents, each derived from its law's own compute model.

Chinchilla and Parcae laws, L = E + A·N^−α + B·D^−β with compute C ∝ N·D (N = parameters, or the
unrolled parameters N(µ_rec) of the Parcae law, which is what a looped model's compute scales with):
minimising L at fixed C gives N* ∝ C^a and D* ∝ C^b with a = β/(α+β), b = α/(α+β) (Hoffmann et al. 2022,
Approach 3).

Recurrence-equivalence law, L = E + A·S^−α + B·D^−β with S = N_once + r^φ·N_rec (what the loops are
worth) while compute scales with P = N_once + r·N_rec (what the loops cost): C = 6·P·D. For a fixed
model (N_once, N_rec), the allocation at fixed C is over r and D = C/(6P). The first-order condition is

    α·A·φ·r^(φ−1)·N_rec·S^(−α−1) = β·B·(6/C)^β·N_rec·P^(β−1),

and differentiating its log with respect to ln C gives the local exponents at the optimum r*(C):

    γ_r = d ln r*/d ln C = β / ((α+1)·s_S + (β−1)·s_P + 1 − φ),   γ_D = 1 − s_P·γ_r,

with s_S = φ·r^φ·N_rec/S and s_P = r·N_rec/P. With N_once → 0 (s_S = φ, s_P = 1) they are constants,
γ_r = β/(αφ+β) and γ_D = αφ/(αφ+β); with N_once > 0 they drift with C, so they are reported at a
reference budget (the geometric mean of the fitted runs' compute).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

LN_R_BOUNDS = (np.log(1e-3), np.log(1e4))


def chinchilla_allocation(alpha, beta):
    """(a_opt, b_opt) = (β/(α+β), α/(α+β)); arrays broadcast."""
    s = np.asarray(alpha, dtype=float) + np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, beta / s, np.nan), np.where(s > 0, alpha / s, np.nan)


def recurrence_local_exponents(alpha: float, beta: float, phi: float, n_once: float, n_rec: float,
                               r: float) -> tuple[float, float]:
    """(γ_r, γ_D) at loop count r of a model with (n_once, n_rec) (module docstring)."""
    S = n_once + r**phi * n_rec
    P = n_once + r * n_rec
    s_S = phi * r**phi * n_rec / S
    s_P = r * n_rec / P
    denom = (alpha + 1) * s_S + (beta - 1) * s_P + 1 - phi
    if not denom > 0:  # second-order condition fails: no interior optimum
        return float("nan"), float("nan")
    g_r = beta / denom
    return float(g_r), float(1 - s_P * g_r)


def optimal_loops(p: dict[str, float], n_once: float, n_rec: float, C: float) -> float:
    """r*(C) of the recurrence law for a fixed model; NaN when the optimum sits on the search bounds."""
    def loss(ln_r: float) -> float:
        r = np.exp(ln_r)
        S = n_once + r ** p["phi"] * n_rec
        D = C / (6 * (n_once + r * n_rec))
        return p["A"] * S ** -p["alpha"] + p["B"] * D ** -p["beta"]

    res = minimize_scalar(loss, bounds=LN_R_BOUNDS, method="bounded", options={"xatol": 1e-9})
    if not (LN_R_BOUNDS[0] + 1e-3 < res.x < LN_R_BOUNDS[1] - 1e-3):
        return float("nan")
    return float(np.exp(res.x))


def recurrence_allocation(p: dict[str, float], n_once: float, n_rec: float, C: float) -> dict[str, float]:
    """{"r_opt": r*(C), "mu_opt": γ_r, "b_opt": γ_D} at reference compute C for a fixed model."""
    r = optimal_loops(p, n_once, n_rec, C)
    if not np.isfinite(r):
        return {"r_opt": float("nan"), "mu_opt": float("nan"), "b_opt": float("nan")}
    g_r, g_d = recurrence_local_exponents(p["alpha"], p["beta"], p["phi"], n_once, n_rec, r)
    return {"r_opt": r, "mu_opt": g_r, "b_opt": g_d}


def reference_point(raw: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """(N_once, N_rec, C) of a recurrence design: medians of the model sizes, geometric mean compute."""
    C = 6 * (raw["N_once"] + raw["r"] * raw["N_rec"]) * raw["D"]
    return (float(np.median(raw["N_once"])), float(np.median(raw["N_rec"])),
            float(np.exp(np.mean(np.log(C)))))


def law_allocation(law_name: str, params: dict[str, float],
                   raw: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Allocation exponents of one fitted law (raw: the design's inputs, needed by the recurrence law)."""
    if law_name == "recurrence":
        if raw is None:
            return {}
        return recurrence_allocation(params, *reference_point(raw))
    if "alpha" in params and "beta" in params:
        a, b = chinchilla_allocation(params["alpha"], params["beta"])
        return {"a_opt": float(a), "b_opt": float(b)}
    return {}


def allocation_samples(law_name: str, samples: dict[str, np.ndarray],
                       raw: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """law_allocation for every bootstrap draw (samples: LawBootstrap.samples)."""
    n = len(next(iter(samples.values())))
    rows = []
    for i in range(n):
        p = {k: float(v[i]) for k, v in samples.items()}
        ok = all(np.isfinite(p.get(k, np.nan)) for k in ("alpha", "beta"))
        rows.append(law_allocation(law_name, p, raw) if ok else {})
    keys = sorted({k for r in rows for k in r})
    return {k: np.array([r.get(k, np.nan) for r in rows]) for k in keys}
