"""Diagnostics of a parametric law fit: identifiability and conditioning warnings (the checklist in
docs/analysis.md), and outlier sensitivity: a bootstrap interval spanning more than a decade, or a
parameter that leaves its interval when the k points with the largest residuals are dropped and the law
refitted, earns a warning that names those points (the fit is then carried by a few points; published
refits drop such outliers, e.g. Besiroglu et al. 2024 drop Chinchilla's 5 highest-loss points)."""
from __future__ import annotations

import numpy as np

from analysis.estimation import LEVEL
from analysis.laws.bootstrap import LawBootstrap
from analysis.laws.point_fit import LawFit, fit_law
from analysis.laws.forms import Design

# Coefficients are positive and read on a log scale: an interval wider than this ratio is a warning.
MAX_RATIO = 10.0
COEFFICIENTS = ("E", "A", "B", "Z")
MAX_DROPPED = 5


def n_dropped(n: int) -> int:
    """k: one point per 20, between 1 and MAX_DROPPED."""
    return int(min(MAX_DROPPED, max(1, n // 20)))


def _label(point_id: str, labels: dict[str, str]) -> str:
    """A point's name: its run's label, with "@T.." kept for test-time points."""
    run, sep, rest = point_id.partition("@")
    return labels.get(run, run) + sep + rest


def outlier_sensitivity(fit: LawFit, boot: LawBootstrap | None, design: Design, level: float,
                        labels: dict[str, str] | None = None) -> list[str]:
    """Warnings (empty when the fit is robust to its k largest residuals); labels: point id -> name."""
    if boot is None or design.n < 8:
        return []
    params = fit.params
    # the reported parameters only (not the internal log-coefficients e, a, b), with finite intervals
    intervals = {k: boot.interval(k, level) for k in fit.law.to_raw(fit.theta, fit.centres)
                 if k in boot.samples and k in params and k not in fit.law.linear}
    intervals = {k: v for k, v in intervals.items() if np.all(np.isfinite(v))}
    wide = [k for k in COEFFICIENTS if k in intervals and intervals[k][0] > 0
            and intervals[k][1] / intervals[k][0] > MAX_RATIO]
    # A parameter whose interval already spans a decade is not identified: "moving out" of it says nothing.
    intervals_tested = {k: v for k, v in intervals.items() if k not in wide}
    resid = np.log(fit.predict(design)) - np.log(design.loss)
    k = n_dropped(design.n)
    worst = np.argsort(-np.abs(resid))[:k]
    keep = np.ones(design.n, bool)
    keep[worst] = False
    refit = fit_law(fit.law, design.subset(keep))
    moved = [name for name, (lo, hi) in intervals_tested.items() if not lo <= refit.params[name] <= hi]
    if not (wide or moved):
        return []
    ids = design.ids or [str(i) for i in range(design.n)]
    names = ", ".join(f"{_label(ids[i], labels or {})} (log residual {resid[i]:+.3g})" for i in worst)
    parts = []
    if wide:
        parts.append(", ".join(f"{p} interval [{intervals[p][0]:.3g}, {intervals[p][1]:.3g}]" for p in wide)
                     + " spans more than a decade")
    if moved:
        parts.append("dropping them moves " + ", ".join(f"{p} to {refit.params[p]:.4g} (interval "
                                                         f"[{intervals[p][0]:.4g}, {intervals[p][1]:.4g}])"
                                                         for p in moved))
    return [f"outlier sensitivity: {'; '.join(parts)}; the {k} largest residual(s): {names}"]


def identifiability_warnings(fit: LawFit, boot: LawBootstrap | None, design: Design,
                             level: float = LEVEL) -> list[str]:
    """Identifiability and conditioning warnings (the checklist in docs/analysis.md)."""
    out: list[str] = []
    law = fit.law
    r = design.raw
    for key, label, exp in (("N", "N", "α"), ("D", "D", "β")):
        if key in r and np.log10(r[key].max() / r[key].min()) < 1:
            out.append(f"{label} spans < 1 decade ({r[key].min():.3g}–{r[key].max():.3g}): "
                       f"{exp} weakly identified")
    if "r" in r:
        if np.unique(r["r"]).size < 3:
            out.append(f"φ not identified: r takes {np.unique(r['r']).size} value(s) (< 3)")
        elif np.std(np.log(r["N_rec"])) > 0 and \
                abs(np.corrcoef(np.log(r["r"]), np.log(r["N_rec"]))[0, 1]) > 0.95:
            out.append("φ weakly identified: log r is collinear with log N_rec in the sample")
    if boot is None:
        return out
    for A, al in (("a", "alpha"), ("b", "beta")):
        c = boot.corr(A, al)
        if np.isfinite(c) and abs(c) > 0.99:
            out.append(f"|corr(log {A.upper()}, {al})| = {abs(c):.4f} > 0.99 across bootstrap "
                       f"fits: do not interpret {A.upper()} on its own (normal for this law)")
    lo, hi = boot.interval("E", level)
    lmin = float(design.loss.min())
    if np.isfinite(lo) and (lo < 0.05 * lmin or hi >= lmin * (1 - 1e-6) or hi - lo > 0.25 * lmin):
        out.append(f"E not identified: {100 * level:.0f} % interval [{lo:.3g}, {hi:.3g}] touches "
                   f"a bound or spans > 25 % of min(L) = {lmin:.3g}; report predictions, or fix E")
    if "phi" in law.params:
        lo, hi = boot.interval("phi", level)
        blo, bhi = law.bounds["phi"]
        if np.isfinite(lo) and (lo <= blo + 1e-3 or hi >= bhi - 1e-3 or hi - lo > 1.0):
            out.append(f"φ not identified: {100 * level:.0f} % interval [{lo:.3g}, {hi:.3g}]")
    fails = int((~boot.success).sum())
    if fails:
        out.append(f"{fails} of {boot.n_boot} bootstrap refits did not report convergence")
    return out
