"""IsoFLOP profiles (Chinchilla "Approach 2"): per FLOP budget, a parabola of
loss against the log of an allocation variable (mean recurrence, tokens); its
minimum is the compute-optimal value at that budget.

All fits happen in natural-log x.  The reported optimum follows one rule, used
both for the point estimate and inside the bootstrap, so that the interval
describes the same estimator:

* curvature > 0 and vertex inside the sampled grid: the vertex;
* curvature > 0 and vertex beyond the grid: the grid edge (flagged, never
  extrapolated);
* curvature <= 0 or fewer than 3 distinct x: the best observed point (flagged).

Beside the parabola, each budget's curve is interpolated with an Akima spline
(no global shape assumed), whose minimum on the sampled range is reported too;
a large gap between the two optima means the parabola's shape assumption is
doing the work.  Quality flags beyond the rule above: an off-centre grid (the
optimum sits in the outer fifth of the sampled range, so one side is barely
sampled), weak curvature (the parabola rises less across the grid than the
scatter of the points about it, so the vertex is set by noise), and
parabola/Akima disagreement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

MIN_DISTINCT_X = 3
# A vertex this close to the grid boundary (fraction of the log-span) is only
# constrained from one side, so it is treated as "at the edge".
EDGE_FRACTION = 0.05
Z95 = 1.959963984540054

FLAG_TOO_FEW = "fewer than 3 distinct points"
FLAG_EDGE_LOW = "minimum at/below lower grid edge"
FLAG_EDGE_HIGH = "minimum at/above upper grid edge"
FLAG_CURVATURE = "non-positive curvature"
FLAG_NO_DOF = "exactly 3 points: no residual dof, no delta-method SE"
FLAG_OFF_CENTRE = "off-centre grid: optimum in the outer fifth of the sampled range"
FLAG_WEAK = "weak curvature: not significantly positive (t < 2), or a rise across the grid under 0.1 %"
FLAG_DISAGREE = "parabola and Akima optima differ by more than a quarter of the grid"
# The outer share of the log-span that counts as "off-centre" (inside it but not at the edge).
OFF_CENTRE_FRACTION = 0.2
# Curvature is "weak" below this t-statistic, or when the parabola rises less than this fraction of
# the loss across the grid (the only test left with exactly 3 points).
WEAK_T = 2.0
WEAK_RELATIVE_RISE = 1e-3
DISAGREE_FRACTION = 0.25
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

    @property
    def opt(self) -> float:
        return float(np.exp(self.x_opt))

    @property
    def ok(self) -> bool:
        """True when the optimum is an interior vertex of a convex parabola that noise does not set."""
        bad = {FLAG_TOO_FEW, FLAG_EDGE_LOW, FLAG_EDGE_HIGH, FLAG_CURVATURE, FLAG_WEAK}
        return not bad.intersection(self.flags)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None:
            return np.full_like(np.asarray(x, dtype=float), np.nan)
        return np.polyval(self.coef, x)


def _edge_limits(x: np.ndarray) -> tuple[float, float, float]:
    lo, hi = float(np.min(x)), float(np.max(x))
    return lo, hi, EDGE_FRACTION * (hi - lo)


def _vertex_se(coef: np.ndarray, cov: np.ndarray) -> float:
    """Delta method for x* = -b / (2a)."""
    a, b, _ = coef
    grad = np.array([b / (2 * a**2), -1 / (2 * a), 0.0])
    var = float(grad @ cov @ grad)
    return float(np.sqrt(var)) if var >= 0 else float("nan")


def fit_parabola(x: np.ndarray, y: np.ndarray) -> ParabolaFit:
    """Least-squares parabola in x (already log-transformed) with quality flags."""
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
    cov = None
    if dof > 0:
        cov = (resid @ resid / dof) * np.linalg.inv(design.T @ design)
    else:
        flags.append(FLAG_NO_DOF)
    a, b, _ = coef
    if a <= 0:
        flags.append(FLAG_CURVATURE)
        if x[best] == x.min():
            flags.append(FLAG_EDGE_LOW)
        elif x[best] == x.max():
            flags.append(FLAG_EDGE_HIGH)
        return ParabolaFit(x, y, coef, float(x[best]), float(y[best]), float("nan"), r2, flags)
    vertex = -b / (2 * a)
    lo, hi, tol = _edge_limits(x)
    x_opt = float(np.clip(vertex, lo, hi))
    if vertex <= lo + tol:
        flags.append(FLAG_EDGE_LOW)
    elif vertex >= hi - tol:
        flags.append(FLAG_EDGE_HIGH)
    else:
        flags += _interior_flags(x, y, coef, cov, vertex)
    se = _vertex_se(coef, cov) if cov is not None else float("nan")
    return ParabolaFit(x, y, coef, x_opt, float(np.polyval(coef, x_opt)), se, r2, flags)


def _interior_flags(x: np.ndarray, y: np.ndarray, coef: np.ndarray, cov: np.ndarray | None,
                    vertex: float) -> list[str]:
    """Off-centre and weak-curvature flags of an interior vertex (cov: of the coefficients, or None)."""
    lo, hi, _ = _edge_limits(x)
    span = hi - lo
    flags = []
    if min(vertex - lo, hi - vertex) < OFF_CENTRE_FRACTION * span:
        flags.append(FLAG_OFF_CENTRE)
    rise = coef[0] * max(vertex - lo, hi - vertex) ** 2
    se_a = float(np.sqrt(cov[0, 0])) if cov is not None and cov[0, 0] > 0 else 0.0
    if rise < WEAK_RELATIVE_RISE * float(np.min(y)) or coef[0] < WEAK_T * se_a:
        flags.append(FLAG_WEAK)
    return flags


def akima_curve(x: np.ndarray, y: np.ndarray, n: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """An Akima spline through the points on n points of the sampled range; None with < 3 distinct x.

    Repeated x (replicate runs) are averaged first: the spline interpolates, it does not smooth.
    """
    ux, inverse = np.unique(np.asarray(x, dtype=float), return_inverse=True)
    if ux.size < MIN_DISTINCT_X:
        return None
    uy = np.bincount(inverse, weights=np.asarray(y, dtype=float)) / np.bincount(inverse)
    grid = np.linspace(ux[0], ux[-1], n)
    return grid, Akima1DInterpolator(ux, uy)(grid)


def akima_optimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(x, y) of the minimum of the Akima spline on the sampled range; NaNs with < 3 distinct x."""
    curve = akima_curve(x, y, AKIMA_GRID)
    if curve is None:
        return float("nan"), float("nan")
    best = int(np.argmin(curve[1]))
    return float(curve[0][best]), float(curve[1][best])


BOOT_METHODS = ("runs", "residuals")


def _optimum_rule(coef: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  best: np.ndarray) -> np.ndarray:
    """Vectorised module rule: clipped vertex if convex, else best observed x."""
    a, b = coef[:, 0], coef[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(-b / (2 * a), lo, hi)
    return np.where(a > 0, vertex, best)


def _bootstrap_runs(x: np.ndarray, y: np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Pairs bootstrap: resample the budget's runs with replacement.

    Each resample is a multinomial weight vector, so the parabola is a weighted
    least-squares solve of a batched 3x3 system.  Resamples with fewer than 3
    distinct x give NaN.  With few runs per budget a resample often loses the
    grid ends, so its optimum is clipped to a narrower grid: this interval is
    conservative (wide) for small designs.
    """
    n = x.size
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    design = np.vander(x, 3)
    gram = np.einsum("bi,ij,ik->bjk", w, design, design)
    rhs = np.einsum("bi,ij,i->bj", w, design, y)
    _, group = np.unique(x, return_inverse=True)
    indicator = np.eye(group.max() + 1)[group]
    valid = ((w @ indicator) > 0).sum(axis=1) >= MIN_DISTINCT_X
    gram[~valid] = np.eye(3)  # placeholder; masked below
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    present = w > 0
    lo = np.where(present, x, np.inf).min(axis=1)
    hi = np.where(present, x, -np.inf).max(axis=1)
    best = x[np.argmin(np.where(present, y, np.inf), axis=1)]
    out = _optimum_rule(coef, lo, hi, best)
    out[~valid] = np.nan
    return out


def _bootstrap_residuals(x: np.ndarray, y: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Residual bootstrap: the design (grid of x) stays fixed, residuals of the
    parabola are resampled (inflated by sqrt(n/(n-3)) for the fitted dof).
    Undefined (NaN) with exactly 3 points, whose residuals are all zero.
    """
    n = x.size
    if n <= 3:
        return np.full(n_boot, np.nan)
    design = np.vander(x, 3)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = design @ coef
    resid = (y - fitted) * np.sqrt(n / (n - 3))
    y_star = fitted + resid[rng.integers(0, n, size=(n_boot, n))]
    coefs = y_star @ np.linalg.pinv(design).T
    best = x[np.argmin(y_star, axis=1)]
    return _optimum_rule(coefs, np.full(n_boot, x.min()), np.full(n_boot, x.max()), best)


def bootstrap_optima(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator,
                     method: str = "runs") -> np.ndarray:
    """ln-optimum for n_boot bootstrap resamples of one budget (see BOOT_METHODS)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "runs":
        return _bootstrap_runs(x, y, n_boot, rng)
    if method == "residuals":
        return _bootstrap_residuals(x, y, n_boot, rng)
    raise ValueError(f"unknown bootstrap method {method!r}")


@dataclass
class BudgetOptimum:
    budget: float
    axis: str
    run_ids: list[str]
    fit: ParabolaFit
    # method -> ln-optima of the bootstrap resamples
    boot: dict[str, np.ndarray] = field(default_factory=dict)
    akima_x_opt: float = float("nan")  # ln of the Akima spline's minimum
    akima_y_opt: float = float("nan")

    @property
    def akima_opt(self) -> float:
        return float(np.exp(self.akima_x_opt))

    def boot_interval(self, method: str = "runs", level: float = 0.95) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        good = self.boot[method][np.isfinite(self.boot[method])]
        if good.size < 10:
            return float("nan"), float("nan")
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(good, [q, 100 - q])
        return float(np.exp(lo)), float(np.exp(hi))

    def delta_interval(self) -> tuple[float, float]:
        se = self.fit.se_x_opt
        if not np.isfinite(se) or not self.fit.ok:
            return float("nan"), float("nan")
        return (float(np.exp(self.fit.x_opt - Z95 * se)),
                float(np.exp(self.fit.x_opt + Z95 * se)))


def isoflop_optima(df: pd.DataFrame, axis: str, n_boot: int = 0,
                   rng: np.random.Generator | None = None) -> list[BudgetOptimum]:
    """Per flop_budget, the parabola fit of ``loss`` vs ln(df[axis]).

    ``df`` must hold usable runs of one model family; runs without a FLOP
    budget (token-budget runs) are ignored.
    """
    rng = rng or np.random.default_rng(0)
    data = df[np.isfinite(df["flop_budget"].to_numpy(dtype=float))]
    out: list[BudgetOptimum] = []
    for budget, grp in data.groupby("flop_budget", sort=True):
        grp = grp[grp[axis].astype(float) > 0]
        x = np.log(grp[axis].to_numpy(dtype=float))
        y = grp["loss"].to_numpy(dtype=float)
        fit = fit_parabola(x, y)
        ax, ay = akima_optimum(x, y)
        if np.isfinite(ax) and abs(ax - fit.x_opt) > DISAGREE_FRACTION * (x.max() - x.min()):
            fit.flags.append(FLAG_DISAGREE)
        boot = {}
        if n_boot and fit.coef is not None:
            boot = {m: bootstrap_optima(x, y, n_boot, rng, m) for m in BOOT_METHODS}
        out.append(BudgetOptimum(float(budget), axis, list(grp["run_id"].astype(str)), fit, boot,
                                 ax, ay))
    return out


def optima_table(optima: list[BudgetOptimum]) -> pd.DataFrame:
    """One row per budget: optimum, delta-method and both bootstrap 95 % intervals, flags."""
    rows = []
    for o in optima:
        d_lo, d_hi = o.delta_interval()
        b_lo, b_hi = o.boot_interval("runs")
        r_lo, r_hi = o.boot_interval("residuals")
        rows.append({
            "budget": o.budget,
            "n_runs": len(o.run_ids),
            "optimum": o.fit.opt,
            "akima_optimum": o.akima_opt,
            "delta_lo": d_lo, "delta_hi": d_hi,
            "boot_lo": b_lo, "boot_hi": b_hi,
            "resid_lo": r_lo, "resid_hi": r_hi,
            "loss_at_opt": o.fit.y_opt,
            "curvature": float(o.fit.coef[0]) if o.fit.coef is not None else float("nan"),
            "r2": o.fit.r2,
            "ok": o.fit.ok,
            "flags": "; ".join(o.fit.flags),
        })
    return pd.DataFrame(rows)


def isoflop_supported(df: pd.DataFrame, min_budgets: int = 2) -> tuple[bool, str]:
    """Whether the runs support an isoFLOP analysis (>= 2 budgets with >= 3 loop counts)."""
    data = df[np.isfinite(df["flop_budget"].to_numpy(dtype=float))]
    if data.empty:
        return False, "no runs with a FLOP budget"
    counts = data.groupby("flop_budget")["mean_recurrence"].nunique()
    enough = int((counts >= MIN_DISTINCT_X).sum())
    if enough < min_budgets:
        return False, (f"{enough} budget(s) with >= {MIN_DISTINCT_X} distinct mean_recurrence "
                       f"values (need {min_budgets})")
    return True, f"{enough} budgets with >= {MIN_DISTINCT_X} loop counts"
