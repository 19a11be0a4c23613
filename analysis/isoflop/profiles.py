"""The two estimators of one isoFLOP budget's minimum, on x = ln(allocation variable): a least-squares
parabola (symmetric in log-size; Hoffmann et al. 2022, Approach 2) and the minimum of an Akima spline
through the points (shape-free). ``analysis.isoflop.optima`` uses the spline as the estimate and the parabola
beside it; ``analysis.isoflop.qc`` refits both when it tests a budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import Akima1DInterpolator

from analysis.estimation import t_critical

MIN_DISTINCT_X = 3
# A vertex this close to the grid boundary (fraction of the log-span) is only
# constrained from one side, so it is treated as "at the edge".
EDGE_FRACTION = 0.05

# Parabola-level notes (what the parabola beside the estimate did); budget-level flags are in isoflop_qc.
FLAG_TOO_FEW = "fewer than 3 distinct points"
FLAG_EDGE_LOW = "minimum at/below lower grid edge"
FLAG_EDGE_HIGH = "minimum at/above upper grid edge"
FLAG_CURVATURE = "non-positive curvature"
FLAG_NO_DOF = "exactly 3 points: no residual dof, no delta-method SE"
FLAG_WEAK = "weak curvature: t below the t distribution's 97.5 % quantile for the residual dof"
AKIMA_GRID = 512


@dataclass
class ParabolaFit:
    """Fit of y = a x^2 + b x + c, x = ln(allocation variable)."""

    x: np.ndarray
    y: np.ndarray
    coef: np.ndarray | None  # (a, b, c) or None when not fitted
    x_opt: float  # ln of the reported optimum (see module rule)
    y_opt: float  # fitted (or observed) loss at x_opt
    se_x_opt: float  # delta-method SE of the vertex in ln units, NaN if unavailable
    r2: float
    flags: list[str] = field(default_factory=list)
    t_curvature: float = float("nan")  # a / se(a)
    dof: int = 0

    @property
    def opt(self) -> float:
        return float(np.exp(self.x_opt))

    @property
    def ok(self) -> bool:
        """True when the vertex is interior to the grid and its curvature passes the t-test."""
        bad = {FLAG_TOO_FEW, FLAG_EDGE_LOW, FLAG_EDGE_HIGH, FLAG_CURVATURE, FLAG_WEAK, FLAG_NO_DOF}
        return not bad.intersection(self.flags)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None:
            return np.full_like(np.asarray(x, dtype=float), np.nan)
        return np.polyval(self.coef, x)


def _vertex_se(coef: np.ndarray, cov: np.ndarray) -> float:
    """Delta method for x* = -b / (2a)."""
    a, b, _ = coef
    grad = np.array([b / (2 * a**2), -1 / (2 * a), 0.0])
    var = float(grad @ cov @ grad)
    return float(np.sqrt(var)) if var >= 0 else float("nan")


def fit_parabola(x: np.ndarray, y: np.ndarray) -> ParabolaFit:
    """Least-squares parabola in x (already log-transformed), with its curvature t-statistic."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    best = int(np.argmin(y))
    if np.unique(x).size < MIN_DISTINCT_X:
        return ParabolaFit(x, y, None, float(x[best]), float(y[best]), float("nan"),
                           float("nan"), [FLAG_TOO_FEW])
    design = np.vander(x, 3)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    flags: list[str] = []
    dof = x.size - 3
    cov, t_a = None, float("nan")
    if dof > 0:
        cov = (resid @ resid / dof) * np.linalg.inv(design.T @ design)
        se_a = float(np.sqrt(max(cov[0, 0], 0.0)))
        t_a = float(coef[0] / se_a) if se_a > 0 else float("inf") * np.sign(coef[0])
    else:
        flags.append(FLAG_NO_DOF)
    a, b, _ = coef
    if a <= 0:
        flags.append(FLAG_CURVATURE)
        if x[best] == x.min():
            flags.append(FLAG_EDGE_LOW)
        elif x[best] == x.max():
            flags.append(FLAG_EDGE_HIGH)
        return ParabolaFit(x, y, coef, float(x[best]), float(y[best]), float("nan"), r2, flags,
                           t_a, dof)
    vertex = -b / (2 * a)
    lo, hi = float(x.min()), float(x.max())
    tol = EDGE_FRACTION * (hi - lo)
    x_opt = float(np.clip(vertex, lo, hi))
    if vertex <= lo + tol:
        flags.append(FLAG_EDGE_LOW)
    elif vertex >= hi - tol:
        flags.append(FLAG_EDGE_HIGH)
    if dof > 0 and not t_a >= t_critical(dof):
        flags.append(FLAG_WEAK)
    se = _vertex_se(coef, cov) if cov is not None else float("nan")
    return ParabolaFit(x, y, coef, x_opt, float(np.polyval(coef, x_opt)), se, r2, flags, t_a, dof)


def averaged(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct x (sorted) and the mean y at each: replicate runs at one size are averaged, because a
    spline interpolates, it does not smooth."""
    ux, inverse = np.unique(np.asarray(x, dtype=float), return_inverse=True)
    uy = np.bincount(inverse, weights=np.asarray(y, dtype=float)) / np.bincount(inverse)
    return ux, uy


def akima_curve(x: np.ndarray, y: np.ndarray, n: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """An Akima spline through the points on n points of the sampled range; None with < 3 distinct x."""
    ux, uy = averaged(x, y)
    if ux.size < MIN_DISTINCT_X:
        return None
    grid = np.linspace(ux[0], ux[-1], n)
    return grid, Akima1DInterpolator(ux, uy)(grid)


def akima_optimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(x, y) of the minimum of the Akima spline on the sampled range; NaNs with < 3 distinct x."""
    curve = akima_curve(x, y, AKIMA_GRID)
    if curve is None:
        return float("nan"), float("nan")
    best = int(np.argmin(curve[1]))
    return float(curve[0][best]), float(curve[1][best])


