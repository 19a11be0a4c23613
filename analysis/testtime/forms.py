"""Test-time law form comparison (Parcae Table 12): which saturating form fits
L(T) best per run, in distribution (fit and score all T) and extrapolated (fit
T <= mu_rec, score T > mu_rec).  Score: mean Huber(δ=1e-3) of log residuals
(reported ×1e-7 like the paper), averaged over runs.

Forms: exp L∞ + Z·e^(−zT); shifted power L∞ + Z·(1+T)^(−z); power with floor
L∞ + Z·T^(−z); power without floor Z·T^(−z).  Each per-run fit is bounded least
squares on log-loss from 6 starts over z with tight tolerances and exact Jacobians,
by the two-phase multi-start of testtime.py, with the decay normalised at the smallest T
fitted (below).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import workers
from analysis.runs import testtime_long
from analysis.estimation import huber_mean
from analysis.testtime.saturation import decay_log_jac, decay_log_resid, decay_predict, multistart

# Every form decays as exp(−z·(b(T) − b(T0))) with its own log-base b: T (exp), ln(1+T) (shifted
# power) or ln T (the two power laws), normalised at T0, the smallest T fitted, so that Z is the decay
# still left at T0 (why: analysis/testtime/saturation.py, whose decay model every form uses).
_LOG_BASE = {
    "exp": lambda T: T,
    "shifted power": np.log1p,
    "power with floor": np.log,
    "power no floor": np.log,
}
N_PARAMS = {"exp": 3, "shifted power": 3, "power with floor": 3, "power no floor": 2}
FORMS = tuple(N_PARAMS)


Z_STARTS = np.geomspace(0.01, 10.0, 6)


def fit_form(form: str, T: np.ndarray, L: np.ndarray):
    """The fitted curve of ``form`` as a function of T (None when no start could be fitted)."""
    k = N_PARAMS[form]
    lnL = np.log(L)
    base = _LOG_BASE[form]
    b0 = base(float(T.min()))
    if k == 3:
        lower, upper = [1e-9, 0.0, 1e-4], [np.inf, np.inf, 50.0]
    else:
        lower, upper = [1e-9, 0.0], [np.inf, 50.0]
    starts = [[0.9 * L.min(), max(L.max() - 0.9 * L.min(), 1e-6), z] if k == 3 else [L.max(), z / 10]
              for z in Z_STARTS]
    best = multistart(decay_log_resid, decay_log_jac, starts, (lower, upper), (base(T) - b0, lnL))
    if best is None:
        return None
    return lambda t: decay_predict(best.x, base(t) - b0)


def run_scores(T: np.ndarray, L: np.ndarray, mu: float) -> dict[str, tuple[float | None, float | None]]:
    """Per form, one run's mean Huber of log residuals: (in distribution, extrapolated T > mu);
    None where the form could not be fitted or the run has too few T <= mu."""
    out = {}
    for form in FORMS:
        curve = fit_form(form, T, L)
        s_in = None if curve is None else huber_mean(np.log(curve(T)) - np.log(L))
        s_ext = None
        inside = T <= mu
        if np.isfinite(mu) and np.unique(T[inside]).size >= 3 and (~inside).any():
            curve = fit_form(form, T[inside], L[inside])
            if curve is not None:
                s_ext = huber_mean(np.log(curve(T[~inside])) - np.log(L[~inside]))
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
