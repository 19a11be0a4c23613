"""Predictions at target FLOP budgets (``--predict 1e21,1e23``; a sweep's config can name them as
``analysis.predict``): the compute-optimal allocation and the loss there, each with a 95 % interval, from
Approach 2 and Approach 3 side by side (summary.json["predictions"], report.md, predictions.png).

* Approach 2 (the main group's power laws, analysis.isoflop.approach2): y*(C) = k·C^γ on every axis it
  fitted (N*, D*, µ_rec*), interval from the law's headline draws (noise redrawn, budgets resampled); the
  loss at the optimum from L*(C) = E + k·C^(−g) through the per-budget minima, refitted on MAX_LOSS_DRAWS
  of the same draws (a pure power law in C cannot level off towards the irreducible loss).
* Approach 3 (the Chinchilla-form law, L = E + A·N^−α + B·D^−β, Hoffmann et al. 2022 eq. 4): N*, D*, L*
  on C = 6ND from the fitted parameters and from each bootstrap draw. The looped laws (parcae, recurrence)
  are not turned into predictions here: their compute model depends on the model's shape, and the
  prediction says so instead of guessing.

A target beyond 100× the largest budget is marked as a far extrapolation.
"""
from __future__ import annotations

import numpy as np

from analysis.estimation import LEVEL, percentile_interval
from analysis.isoflop.approach2 import LABEL
from analysis.isoflop.powerlaw import HEADLINE, budget_weights

MAX_LOSS_DRAWS = 200
FAR = 100.0


def parse_targets(text: str) -> tuple[float, ...]:
    """``1e21,1e23`` -> (1e21, 1e23); ValueError with one line naming the fix."""
    out = []
    for item in str(text).split(","):
        try:
            v = float(item)
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"--predict {text}: {item.strip()!r} is not a positive FLOP budget; give e.g. "
                             "--predict 1e21,1e23")
        out.append(v)
    return tuple(out)


def _interval(draws: np.ndarray) -> list[float]:
    lo, hi = percentile_interval(draws[np.isfinite(draws)], LEVEL) if np.isfinite(draws).sum() >= 10 \
        else (float("nan"), float("nan"))
    return [float(lo), float(hi)]


def _loss_law(lnC: np.ndarray, L: np.ndarray, w: np.ndarray | None = None) -> np.ndarray | None:
    """(E, ln k, g) of L = E + k·C^−g through (C, L), weighted; None when it does not fit."""
    from scipy.optimize import least_squares

    w = np.ones_like(L) if w is None else w
    x = lnC - lnC.mean()
    p0 = np.array([0.9 * L.min(), np.log(max(L.max() - 0.9 * L.min(), 1e-6)), 0.1])
    try:
        fit = least_squares(lambda p: np.sqrt(w) * (p[0] + np.exp(p[1] - p[2] * x) - L), p0,
                            bounds=([0.0, -50.0, 0.0], [L.min(), 50.0, 5.0]))
    except ValueError:
        return None
    return fit.x if fit.success else None


def _loss_at(p: np.ndarray, lnC_mean: float, C: float) -> float:
    return float(p[0] + np.exp(p[1] - p[2] * (np.log(C) - lnC_mean)))


def _approach2(res, targets, rng) -> list[dict]:
    group = next((g for g in res.isoflop if any(r.law is not None for r in g.results)), None)
    if group is None:
        return [{"approach": "Approach 2", "C": C, "reason": "no isoFLOP power law was identified"}
                for C in targets]
    rows = []
    laws = [r for r in group.results if r.law is not None]
    first = laws[0]
    used = [o for o in first.optima if o.budget in set(first.law.C.tolist())]
    lnC = np.log([o.budget for o in used])
    est = first.law.estimator
    L = np.array([o.minima[est][1] for o in used])
    point = _loss_law(lnC, L)
    loss_draws = None
    key = f"{est}_loss"
    if point is not None and all(key in o.boot for o in used):
        D = np.stack([o.boot[key] for o in used], axis=1)[:MAX_LOSS_DRAWS]
        W = budget_weights(D.shape[0], len(used), rng)
        loss_draws = [_loss_law(lnC, D[i], W[i] * len(used)) for i in range(D.shape[0])]
    largest = float(max(np.exp(lnC)))
    for C in targets:
        row = {"approach": "Approach 2", "C": C, "group": group.name, "estimator": est,
               "extrapolation": C / largest, "far": C > FAR * largest}
        for r in laws:
            gam, lnk = r.law.boot.get(HEADLINE, (np.array([]), np.array([])))
            draws = np.exp(lnk + gam * np.log(C))
            row[r.axis] = {"label": LABEL[r.axis], "value": float(r.law.predict(C)),
                           "interval": _interval(draws) if draws.size else [float("nan")] * 2}
        if point is not None:
            ld = (np.array([_loss_at(p, lnC.mean(), C) if p is not None else np.nan for p in loss_draws])
                  if loss_draws else np.array([]))
            row["loss"] = {"label": "L*", "value": _loss_at(point, lnC.mean(), C),
                           "interval": _interval(ld) if ld.size else [float("nan")] * 2,
                           "law": "L*(C) = E + k·C^−g through the per-budget minima"}
        rows.append(row)
    return rows


def _chinchilla_optimum(E, A, alpha, B, beta, C):
    """N*, D*, L* of L = E + A N^−α + B D^−β on C = 6ND (Hoffmann et al. 2022, eq. 4); arrays broadcast."""
    with np.errstate(all="ignore"):
        G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        N = G * (C / 6) ** (beta / (alpha + beta))
        D = C / (6 * N)
        return N, D, E + A * N ** -alpha + B * D ** -beta


def _approach3(res, targets) -> list[dict]:
    law = next((r for r in res.laws if r.name == "chinchilla"), None)
    if law is None:
        names = ", ".join(r.name for r in res.laws) or "none"
        return [{"approach": "Approach 3", "C": C,
                 "reason": f"no Chinchilla-form law fitted (laws: {names}); the looped laws' compute model "
                           "depends on the model's shape, so no prediction is made from them"} for C in targets]
    p = law.fit.params
    s = law.boot.samples if law.boot is not None else {}
    rows = []
    for C in targets:
        N, D, L = _chinchilla_optimum(p["E"], p["A"], p["alpha"], p["B"], p["beta"], C)
        row = {"approach": "Approach 3", "C": C, "law": "chinchilla"}
        if all(k in s for k in ("E", "A", "alpha", "B", "beta")):  # raw units (analysis.laws.forms.to_raw)
            Nd, Dd, Ld = _chinchilla_optimum(s["E"], s["A"], s["alpha"], s["B"], s["beta"], C)
        else:
            Nd = Dd = Ld = np.array([])
        for key, label, v, d in (("params", "N*", N, Nd), ("tokens", "D*", D, Dd), ("loss", "L*", L, Ld)):
            row[key] = {"label": label, "value": float(v),
                        "interval": _interval(np.asarray(d)) if np.size(d) else [float("nan")] * 2}
        rows.append(row)
    return rows


def predictions(res, targets: tuple[float, ...]) -> list[dict]:
    """summary.json["predictions"]: one row per (target, approach)."""
    if not targets:
        return []
    rng = np.random.default_rng(res.options.seed)
    a2 = _approach2(res, targets, rng)
    a3 = _approach3(res, targets)
    return [row for pair in zip(a2, a3) for row in pair]
