"""Test-time law form comparison (Parcae Table 12): which saturating form fits
L(T) best per run, in distribution (fit and score all T) and extrapolated (fit
T <= mu_rec, score T > mu_rec).  Score: mean Huber(δ=1e-3) of log residuals
(reported ×1e-7 like the paper), averaged over runs.

Forms: exp L∞ + Z·e^(−zT); shifted power L∞ + Z·(1+T)^(−z); power with floor
L∞ + Z·T^(−z); power without floor Z·T^(−z).  Each per-run fit is bounded least
squares on log-loss from 6 starts over z with tight tolerances and exact Jacobians,
by the two-phase multi-start of testtime.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis import workers
from analysis.runs import testtime_long
from analysis.testtime import HUBER_DELTA, huber_mean, multistart

# The three saturating forms are L∞ + Z·g(T; z); per form the decay g and ln of its base
# (dg/dz = −ln(base)·g), which gives the exact Jacobian of ln L̂.
_DECAYS = {
    "exp": (lambda T, z: np.exp(-z * T), lambda T: T),
    "shifted power": (lambda T, z: (1 + T) ** (-z), lambda T: np.log1p(T)),
    "power with floor": (lambda T, z: T ** (-z), lambda T: np.log(T)),
}


def _saturating(g):
    return lambda p, T: p[0] + p[1] * g(T, p[2])


def _no_floor(p, T):
    return p[0] * T ** (-p[1])


FORMS = {name: (_saturating(g), 3) for name, (g, _) in _DECAYS.items()}
FORMS["power no floor"] = (_no_floor, 2)


def _log_resid(p, f, T, lnL):
    return np.log(np.maximum(f(p, T), 1e-300)) - lnL


def _log_jac(form: str):
    if form == "power no floor":  # ln L̂ = ln Z − z ln T
        return lambda p, f, T, lnL: np.column_stack([np.full_like(T, 1.0 / p[0]), -np.log(T)])
    g, log_base = _DECAYS[form]

    def jac(p, f, T, lnL):
        d = g(T, p[2])
        fv = np.maximum(p[0] + p[1] * d, 1e-300)
        return np.column_stack([1.0 / fv, d / fv, -p[1] * log_base(T) * d / fv])
    return jac


Z_STARTS = np.geomspace(0.01, 10.0, 6)


def fit_form(form: str, T: np.ndarray, L: np.ndarray) -> np.ndarray | None:
    f, k = FORMS[form]
    lnL = np.log(L)
    if k == 3:
        lower, upper = [1e-9, 0.0, 1e-4], [np.inf, np.inf, 50.0]
    else:
        lower, upper = [1e-9, 0.0], [np.inf, 50.0]
    starts = [[0.9 * L.min(), max(L.max() - 0.9 * L.min(), 1e-6), z] if k == 3 else [L.max(), z / 10]
              for z in Z_STARTS]
    best = multistart(_log_resid, _log_jac(form), starts, (lower, upper), (f, T, lnL))
    return None if best is None else best.x


def run_scores(T: np.ndarray, L: np.ndarray, mu: float) -> dict[str, tuple[float | None, float | None]]:
    """Per form, one run's mean Huber of log residuals: (in distribution, extrapolated T > mu);
    None where the form could not be fitted or the run has too few T <= mu."""
    out = {}
    for form, (f, _) in FORMS.items():
        p = fit_form(form, T, L)
        s_in = None if p is None else huber_mean(np.log(f(p, T)) - np.log(L))
        s_ext = None
        inside = T <= mu
        if np.isfinite(mu) and np.unique(T[inside]).size >= 3 and (~inside).any():
            p = fit_form(form, T[inside], L[inside])
            if p is not None:
                s_ext = huber_mean(np.log(f(p, T[~inside])) - np.log(L[~inside]))
        out[form] = (s_in, s_ext)
    return out


def compare_forms(df: pd.DataFrame) -> pd.DataFrame:
    """One row per form: mean Huber ×1e-7 in distribution and extrapolated, runs used (one job per
    run on the analysis's worker pool, analysis/workers.py)."""
    long = testtime_long(df)
    mu = df.set_index(df["run_id"].astype(str))["mean_recurrence"].astype(float)
    jobs = []
    for rid, g in long.groupby("run_id"):
        T = g["T"].to_numpy(float)
        if np.unique(T).size >= 4:
            jobs.append((T, g["loss"].to_numpy(float), float(mu.get(str(rid), np.nan))))
    scores: dict[str, dict[str, list[float]]] = {f: {"in": [], "ext": []} for f in FORMS}
    for per_run in workers.run_all(run_scores, jobs):
        for form, (s_in, s_ext) in per_run.items():
            if s_in is not None:
                scores[form]["in"].append(s_in)
            if s_ext is not None:
                scores[form]["ext"].append(s_ext)
    rows = []
    for form, s in scores.items():
        rows.append({"form": form,
                     "in-distribution (×1e-7)": 1e7 * np.mean(s["in"]) if s["in"] else np.nan,
                     "runs (in)": len(s["in"]),
                     "extrapolated T > mu_rec (×1e-7)": 1e7 * np.mean(s["ext"]) if s["ext"] else np.nan,
                     "runs (ext)": len(s["ext"])})
    return pd.DataFrame(rows)
