"""Outlier sensitivity of a parametric law fit: a bootstrap interval spanning more than a decade, or a
parameter that leaves its interval when the k points with the largest residuals are dropped and the law
refitted, earns a warning that names those points (the fit is then carried by a few points; published
refits drop such outliers, e.g. Besiroglu et al. 2024 drop Chinchilla's 5 highest-loss points)."""
from __future__ import annotations

import numpy as np

from analysis.fit import LawBootstrap, LawFit, fit_law
from analysis.laws import Design

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
    intervals = {k: boot.interval(k, level) for k in fit.law.to_raw(fit.theta, fit.centres)
                 if k in boot.samples and k in params}
    wide = [k for k in COEFFICIENTS if k in intervals and intervals[k][0] > 0
            and intervals[k][1] / intervals[k][0] > MAX_RATIO]
    resid = np.log(fit.predict(design)) - np.log(design.loss)
    k = n_dropped(design.n)
    worst = np.argsort(-np.abs(resid))[:k]
    keep = np.ones(design.n, bool)
    keep[worst] = False
    refit = fit_law(fit.law, design.subset(keep))
    moved = [name for name, (lo, hi) in intervals.items()
             if np.isfinite(lo) and not lo <= refit.params[name] <= hi]
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
