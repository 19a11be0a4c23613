"""Test-time law form comparison (Parcae Table 12): which saturating form fits
L(T) best per run, in distribution (fit and score all T) and extrapolated (fit
T <= mu_rec, score T > mu_rec).  Score: mean Huber(δ=1e-3) of log residuals
(reported ×1e-7 like the paper), averaged over runs.

Forms: exp L∞ + Z·e^(−zT); shifted power L∞ + Z·(1+T)^(−z); power with floor
L∞ + Z·T^(−z); power without floor Z·T^(−z).  Each per-run fit is bounded least
squares on log-loss from 6 starts over z with tight tolerances (as testtime.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.runs import testtime_long
from analysis.testtime import HUBER_DELTA, huber_mean

FORMS = {
    "exp": (lambda p, T: p[0] + p[1] * np.exp(-p[2] * T), 3),
    "shifted power": (lambda p, T: p[0] + p[1] * (1 + T) ** (-p[2]), 3),
    "power with floor": (lambda p, T: p[0] + p[1] * T ** (-p[2]), 3),
    "power no floor": (lambda p, T: p[0] * T ** (-p[1]), 2),
}
Z_STARTS = np.geomspace(0.01, 10.0, 6)


def fit_form(form: str, T: np.ndarray, L: np.ndarray) -> np.ndarray | None:
    f, k = FORMS[form]
    lnL = np.log(L)
    if k == 3:
        lower, upper = [1e-9, 0.0, 1e-4], [np.inf, np.inf, 50.0]
    else:
        lower, upper = [1e-9, 0.0], [np.inf, 50.0]
    best = None
    for z in Z_STARTS:
        p0 = [0.9 * L.min(), max(L.max() - 0.9 * L.min(), 1e-6), z] if k == 3 else [L.max(), z / 10]
        try:
            res = least_squares(lambda p: np.log(np.maximum(f(p, T), 1e-300)) - lnL, p0,
                                bounds=(lower, upper), method="trf", x_scale="jac",
                                ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=2000)
        except ValueError:
            continue
        if best is None or res.cost < best.cost:
            best = res
    return None if best is None else best.x


def compare_forms(df: pd.DataFrame) -> pd.DataFrame:
    """One row per form: mean Huber ×1e-7 in distribution and extrapolated, runs used."""
    long = testtime_long(df)
    mu = df.set_index(df["run_id"].astype(str))["mean_recurrence"].astype(float)
    scores: dict[str, dict[str, list[float]]] = {f: {"in": [], "ext": []} for f in FORMS}
    for rid, g in long.groupby("run_id"):
        T = g["T"].to_numpy(float)
        L = g["loss"].to_numpy(float)
        if np.unique(T).size < 4:
            continue
        m = float(mu.get(str(rid), np.nan))
        for form, (f, _) in FORMS.items():
            p = fit_form(form, T, L)
            if p is not None:
                scores[form]["in"].append(huber_mean(np.log(f(p, T)) - np.log(L)))
            inside = T <= m
            if np.isfinite(m) and np.unique(T[inside]).size >= 3 and (~inside).any():
                p = fit_form(form, T[inside], L[inside])
                if p is not None:
                    scores[form]["ext"].append(huber_mean(np.log(f(p, T[~inside]))
                                                          - np.log(L[~inside])))
    rows = []
    for form, s in scores.items():
        rows.append({"form": form,
                     "in-distribution (×1e-7)": 1e7 * np.mean(s["in"]) if s["in"] else np.nan,
                     "runs (in)": len(s["in"]),
                     "extrapolated T > mu_rec (×1e-7)": 1e7 * np.mean(s["ext"]) if s["ext"] else np.nan,
                     "runs (ext)": len(s["ext"])})
    return pd.DataFrame(rows)
