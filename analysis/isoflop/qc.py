"""Quality control of isoFLOP profiles, per point and per budget. Each check is a named flag with a
reason; ``analysis.isoflop.optima`` leaves flagged points and budgets out of the power law unless told to keep
them. The checks and their thresholds are defined in docs/analysis.md; the constants below are the one
place they are set.

Per point (x = ln size, y = loss, one budget):
* ``exact_duplicate``: same size and same loss as an earlier point (a repeated row). Same size with a
  different loss is a replicate run and is averaged, not flagged.
* ``near_duplicate``: a size within NEAR_DUPLICATE_STEPS of the median grid step of another size; a
  spline through both swings on the noise between them. The larger of the two is left out.
* ``outlier``: a point far from a robust smooth fit through the budget (log-loss as a cubic in ln size
  with a soft-L1 loss), in units of the other points' residual SD; the largest is removed and the test
  repeated (needs MIN_SIZES_FOR_OUTLIERS distinct sizes).

Per budget:
* ``too_few_points``: fewer than 3 distinct sizes.
* ``edge_low`` / ``edge_high``: the lowest loss is at a grid end (the optimum may lie beyond it).
* ``off_centre``: fewer than MIN_SIDE sampled sizes on one side of the optimum. On the µ_rec axis a
  grid starting at µ_rec = 1 counts as complete below (nothing lies below 1), and leaving µ_rec = 1
  out does not count as moving the minimum to the edge.
* ``weak_curvature``: the parabola's curvature is not significantly positive: t = a / se(a) below the
  t distribution's 97.5 % quantile for its residual degrees of freedom (untestable with 0 dof).
* ``single_point``: leaving one size out moves the minimum to the edge of the remaining grid, or takes
  the curvature t below the threshold the whole budget passed. A warning unless
  ``exclude_single_point`` (measured: excluding does not help the exponent, docs/analysis.md).
* ``parabola_akima_disagreement``: the parabola's vertex and the spline's minimum are more than
  DISAGREE_STEPS median grid steps apart.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from scipy.optimize import least_squares

from analysis.isoflop.profiles import (EDGE_FRACTION, MIN_DISTINCT_X, ParabolaFit, averaged, fit_parabola,
                                   t_critical)

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
OUTLIER = "outlier"
TOO_FEW = "too_few_points"
EDGE_LOW = "edge_low"
EDGE_HIGH = "edge_high"
OFF_CENTRE = "off_centre"
WEAK_CURVATURE = "weak_curvature"
SINGLE_POINT = "single_point"
DISAGREE = "parabola_akima_disagreement"

NEAR_DUPLICATE_STEPS = 0.1
# Outliers: a log-loss residual from the robust smooth fit beyond OUTLIER_K residual SDs of the other
# points and beyond OUTLIER_FLOOR (0.5 %; noise-free curves have tiny SDs). On simulated 9-point
# Chinchilla isoFLOP curves (×/÷ 8 around the optimum, 0.3–1 % noise) this flags a clean budget about
# 3 % of the time and finds an 8σ (>= 2 %) outlier about 2 times in 3. Needs OUTLIER_DEGREE + 4 sizes.
OUTLIER_DEGREE = 3
OUTLIER_K = 5.0
OUTLIER_FLOOR = 5e-3
MIN_SIZES_FOR_OUTLIERS = OUTLIER_DEGREE + 4
MIN_SIDE = 2
DISAGREE_STEPS = 1.0


@dataclass(frozen=True)
class QCConfig:
    """Every QC threshold, settable with ``--qc KEY=VALUE`` and recorded in summary.json["qc"]."""

    near_duplicate_steps: float = NEAR_DUPLICATE_STEPS
    outlier_k: float = OUTLIER_K
    outlier_floor: float = OUTLIER_FLOOR
    min_sizes_for_outliers: int = MIN_SIZES_FOR_OUTLIERS
    min_side: int = MIN_SIDE
    disagree_steps: float = DISAGREE_STEPS
    # The parabola is biased on asymmetric curves: its disagreement with the spline is no measured reason
    # to drop a budget (issue 22: published QC keeps such budgets), so by default it only warns.
    exclude_disagreement: bool = False
    # Measured (analysis/isoflop/qc_measure.py, table in docs/analysis.md): leaving single_point budgets
    # out never lowered the exponent's error or raised its coverage, and it lost the power law in most
    # noisy coarse or off-centre tables; so by default it only warns.
    exclude_single_point: bool = False


def parse_qc(items: list[str], base: QCConfig | None = None) -> QCConfig:
    """QCConfig from ``KEY=VALUE`` strings; ValueError (one line naming the key and the fix) otherwise."""
    cfg = base or QCConfig()
    types = {f.name: f.type for f in fields(QCConfig)}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise ValueError(f"--qc {item}: unknown QC setting {key!r}; give KEY=VALUE with KEY one of "
                             + ", ".join(types))
        try:
            if types[key] in (bool, "bool"):
                if value.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                parsed = value.strip().lower() in ("true", "1")
            else:
                parsed = (int if types[key] in (int, "int") else float)(value)
        except ValueError:
            raise ValueError(f"--qc {item}: {key} takes a {types[key]} value, e.g. "
                             f"{key}={getattr(QCConfig(), key)}") from None
        cfg = replace(cfg, **{key: parsed})
    return cfg


@dataclass(frozen=True)
class Flag:
    code: str
    reason: str
    excludes: bool = True  # False: a warning, shown but not a reason to leave the budget out


def _step(ux: np.ndarray) -> float:
    """Median spacing of the distinct sizes (ln units)."""
    return float(np.median(np.diff(ux))) if ux.size >= 2 else float("nan")


def _robust_smooth_residuals(ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Residuals of a cubic in ln size fitted with a soft-L1 loss (an outlier barely pulls it).

    Why not the Akima spline itself: it interpolates, so its residuals are zero, and leave-one-out
    Akima residuals on a wide grid are dominated by interpolation error where the curve is steep (on
    Chinchilla-like surfaces they flagged clean points and missed planted ones). A cubic in ln size
    follows a smooth isoFLOP curve across a wide grid while assuming no symmetry about the minimum."""
    z = (ux - ux.mean()) / ux.std()
    V = np.vander(z, OUTLIER_DEGREE + 1)
    c0, *_ = np.linalg.lstsq(V, uy, rcond=None)
    scale = max(1.4826 * float(np.median(np.abs(uy - V @ c0))), 1e-6)
    fit = least_squares(lambda c: V @ c - uy, c0, loss="soft_l1", f_scale=scale)
    return uy - V @ fit.x


def _outliers(x: np.ndarray, y: np.ndarray, alive: np.ndarray, cfg: QCConfig) -> dict[int, Flag]:
    """The largest robust residual is an outlier when it exceeds OUTLIER_K times the residual SD of the
    other points (and OUTLIER_FLOOR of the loss); it is removed and the test repeated."""
    out: dict[int, Flag] = {}
    while True:
        ux, uy = averaged(x[alive], y[alive])
        if ux.size < max(cfg.min_sizes_for_outliers, OUTLIER_DEGREE + 3):
            return out
        # log-loss: run-to-run noise is multiplicative, so the steep ends of a wide grid are not noisier
        r = _robust_smooth_residuals(ux, np.log(uy))
        j = int(np.argmax(np.abs(r)))
        others = np.delete(r, j)
        sd = float(np.sqrt(np.sum(others**2) / (others.size - OUTLIER_DEGREE - 1)))
        threshold = max(cfg.outlier_k * sd, cfg.outlier_floor)
        if not abs(r[j]) > threshold:
            return out
        reason = (f"loss {uy[j]:.4g} at size {np.exp(ux[j]):.4g} is {100 * np.expm1(r[j]):+.2g} % off a "
                  f"robust smooth fit through the budget (threshold {100 * threshold:.2g} % = "
                  f"max({cfg.outlier_k:g} × residual SD of the other points, {100 * cfg.outlier_floor:g} %))")
        for i in np.flatnonzero(alive & (x == ux[j])):
            out[int(i)] = Flag(OUTLIER, reason)
            alive[i] = False


def point_flags(x: np.ndarray, y: np.ndarray, cfg: QCConfig = QCConfig()) -> tuple[dict[int, Flag], list[str]]:
    """Flags per point index of one budget, and notes that exclude nothing (replicates)."""
    flags: dict[int, Flag] = {}
    first: dict[tuple[float, float], int] = {}
    for i, key in enumerate(zip(x.tolist(), y.tolist())):
        if key in first:
            flags[i] = Flag(EXACT_DUPLICATE, f"same size {np.exp(key[0]):.4g} and loss {key[1]:.6g} as "
                                             f"point {first[key]}: a repeated row")
        else:
            first[key] = i
    alive = np.ones(x.size, bool)
    alive[list(flags)] = False
    ux = np.unique(x[alive])
    step = _step(ux)
    for a, b in zip(ux[:-1], ux[1:]):
        if ux.size >= MIN_DISTINCT_X and b - a < cfg.near_duplicate_steps * step:
            reason = (f"size {np.exp(b):.4g} is within {100 * np.expm1(b - a):.2g} % of size {np.exp(a):.4g} "
                      f"(< {cfg.near_duplicate_steps:g} of the median grid step): a spline through both "
                      "swings on their noise; the smaller size is kept")
            for i in np.flatnonzero(alive & (x == b)):
                flags[int(i)] = Flag(NEAR_DUPLICATE, reason)
                alive[i] = False
    notes = []
    _, counts = np.unique(x[alive], return_counts=True)
    if (counts > 1).any():
        notes.append(f"{int((counts > 1).sum())} size(s) with replicate runs: their losses are averaged "
                     "(spline and parabola alike)")
    flags.update(_outliers(x, y, alive, cfg))
    return flags, notes


def _edge_flag(ux: np.ndarray, uy: np.ndarray, akima_x: float, axis: str) -> Flag | None:
    tol = EDGE_FRACTION * (ux[-1] - ux[0])
    best = int(np.argmin(uy))
    if best == 0 or akima_x <= ux[0] + tol:
        value = np.exp(ux[0])
        why = (" (µ_rec = 1 is the lower bound: looping does not pay at this budget)"
               if axis == "mean_recurrence" and abs(value - 1) < 1e-9 else "; extend the grid downwards")
        return Flag(EDGE_LOW, f"lowest loss at the smallest sampled value {value:.4g}{why}")
    if best == ux.size - 1 or akima_x >= ux[-1] - tol:
        return Flag(EDGE_HIGH, f"lowest loss at the largest sampled value {np.exp(ux[-1]):.4g}: the optimum "
                               "may lie beyond the grid; extend it upwards")
    return None


def _curvature_problem(fit: ParabolaFit, dof_for_threshold: int | None = None) -> str | None:
    """Why the parabola's curvature is not significantly positive, or None when it is. The threshold is
    the t quantile for the fit's own dof, or for ``dof_for_threshold`` (see _single_point)."""
    if fit.coef is None:
        return "no parabola (fewer than 3 distinct sizes)"
    if fit.coef[0] <= 0:
        return f"non-positive curvature (a = {fit.coef[0]:.3g})"
    if fit.dof == 0:
        return "exactly 3 points: no residual dof to test the curvature"
    dof = fit.dof if dof_for_threshold is None else dof_for_threshold
    tc = t_critical(dof)
    if not fit.t_curvature >= tc:
        return (f"curvature t = {fit.t_curvature:.2f} on {fit.dof} dof is below {tc:.2f}, the t "
                f"distribution's 97.5 % quantile for {dof} dof")
    return None


def _single_point(x: np.ndarray, y: np.ndarray, dof: int, curvature_ok: bool,
                  check_edge: bool, keep_lowest: bool = False) -> Flag | None:
    """Leave each size out in turn. The curvature is held to the threshold the whole budget passed
    (its dof), not the stricter one of the smaller sample: losing a point always costs a dof, and the
    question is whether the evidence for a minimum vanishes without that point."""
    for xi in np.unique(x):
        keep = x != xi
        ux, uy = averaged(x[keep], y[keep])
        if ux.size < MIN_DISTINCT_X:
            continue
        best = int(np.argmin(uy))
        dropped_bound = keep_lowest and xi == x.min()  # µ_rec = 1 is a bound, not a grid choice
        if check_edge and best in (0, ux.size - 1) and not dropped_bound:
            return Flag(SINGLE_POINT, f"without the point(s) at {np.exp(xi):.4g} the lowest loss moves to the "
                                      f"grid edge ({np.exp(ux[best]):.4g}): the optimum rests on one point")
        if curvature_ok:
            loo = fit_parabola(ux, uy)
            problem = _curvature_problem(loo, dof) if loo.dof >= 1 else None
            if problem:
                return Flag(SINGLE_POINT, f"without the point(s) at {np.exp(xi):.4g}: {problem}; the "
                                          "curvature rests on one point")
    return None


def budget_flags(x: np.ndarray, y: np.ndarray, fit: ParabolaFit, akima_x: float, axis: str,
                 cfg: QCConfig = QCConfig()) -> list[Flag]:
    """Budget-level flags of one budget's kept points (x = ln size)."""
    ux, uy = averaged(x, y)
    if ux.size < MIN_DISTINCT_X:
        return [Flag(TOO_FEW, f"{ux.size} distinct size(s); a minimum needs >= {MIN_DISTINCT_X}")]
    flags: list[Flag] = []
    at_bound = axis == "mean_recurrence" and abs(np.exp(ux[0]) - 1) < 1e-9
    edge = _edge_flag(ux, uy, akima_x, axis)
    if edge:
        flags.append(edge)
    else:
        below, above = int((ux < akima_x).sum()), int((ux > akima_x).sum())
        if at_bound:  # nothing can be sampled below µ_rec = 1: the lower side is as complete as it gets
            below = max(below, cfg.min_side)
        side = min(below, above)
        if side < cfg.min_side:
            where = "lower" if below < cfg.min_side else "upper"
            flags.append(Flag(OFF_CENTRE, f"only {side} sampled size(s) on the {where} side of the optimum "
                                          f"{np.exp(akima_x):.4g} (need {cfg.min_side}); extend the grid there"))
    problem = _curvature_problem(fit)
    if problem:
        flags.append(Flag(WEAK_CURVATURE, problem))
    if not edge:
        # An off-centre optimum already rests on one point on its short side: not reported twice.
        single = _single_point(x, y, fit.dof, curvature_ok=problem is None,
                               check_edge=not any(f.code == OFF_CENTRE for f in flags),
                               keep_lowest=at_bound)
        if single:
            flags.append(single if cfg.exclude_single_point else
                         Flag(SINGLE_POINT, single.reason + " (a warning: the budget is kept)", False))
    if not edge and fit.coef is not None and fit.coef[0] > 0:
        steps = abs(fit.x_opt - akima_x) / _step(ux)
        if steps > cfg.disagree_steps:
            flags.append(Flag(DISAGREE, f"parabola vertex {fit.opt:.4g} and spline minimum "
                                        f"{np.exp(akima_x):.4g} are {steps:.2f} grid steps apart "
                                        f"(> {cfg.disagree_steps:g}): the curve is asymmetric or noisy at the "
                                        "grid's resolution"
                                        + ("" if cfg.exclude_disagreement else " (a warning: the budget is kept)"),
                              cfg.exclude_disagreement))
    return flags
