"""IsoFLOP profiles (Chinchilla "Approach 2"): per FLOP budget, the minimum of loss against the log of
an allocation variable (parameters, tokens, mean recurrence) is the compute-optimal value at that budget.

The estimate is shape-free: the minimum of an Akima spline through the budget's points (replicates at
one size averaged) on the sampled range, with a run-bootstrap interval (the budget's runs resampled with
replacement, the spline and its minimum recomputed). A parabola's vertex sits beside it: it assumes a
symmetric curve in log-size, which biases it when the grid is wide, off-centre or the surface is
asymmetric (Hoffmann et al. 2022 used it as their Approach 2; the bias is the reason the spline is the
estimate here). Quality control per point and per budget lives in ``analysis.isoflop.qc``; every flag
is a named code with a reason, and a flagged budget is left out of the power law unless asked.

All fits happen in natural-log x. The parabola's reported optimum follows one rule, used both for the
point estimate and inside its bootstrap so that the interval describes the same estimator:

* curvature > 0 and vertex inside the sampled grid: the vertex;
* curvature > 0 and vertex beyond the grid: the grid edge (never extrapolated);
* curvature <= 0 or fewer than 3 distinct x: the best observed point.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from analysis.estimation import LEVEL, percentile_interval, resample_weights
from analysis.isoflop import qc
from analysis.isoflop.profiles import (AKIMA_GRID, MIN_DISTINCT_X, ParabolaFit, akima_optimum,
                                       fit_parabola)

# axis name (summary.json, CLI) -> frame column
AXIS_COLUMN = {"params": "n_params", "tokens": "tokens", "mean_recurrence": "mean_recurrence"}

BOOT_METHODS = ("runs", "residuals")


def _optimum_rule(coef: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  best: np.ndarray) -> np.ndarray:
    """Vectorised parabola rule: clipped vertex if convex, else best observed x."""
    a, b = coef[:, 0], coef[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(-b / (2 * a), lo, hi)
    return np.where(a > 0, vertex, best)


def _bootstrap_runs(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Parabola optimum per resample (w: multiplicities). Each resample is a weighted least-squares
    solve of a batched 3x3 system; resamples with fewer than 3 distinct x give NaN. A resample that
    loses a grid end has its optimum clipped to the narrower grid: conservative (wide) for small
    designs."""
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


def _bootstrap_akima(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Akima minimum per resample (same resamples as the parabola's): replicates, including a run drawn
    twice, are averaged with their multiplicity; fewer than 3 distinct x gives NaN. Resamples that
    keep the same sizes share one spline construction (Akima1DInterpolator takes many y columns)."""
    ux, inverse = np.unique(x, return_inverse=True)
    indicator = np.eye(ux.size)[inverse]           # (runs, sizes)
    counts = w @ indicator                          # (resamples, sizes)
    sums = (w * y) @ indicator
    present = counts > 0
    out = np.full(w.shape[0], np.nan)
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    for k, mask in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == k)
        if mask.sum() < MIN_DISTINCT_X:
            continue
        xs = ux[mask]
        ys = (sums[rows][:, mask] / counts[rows][:, mask]).T  # (sizes, resamples)
        grid = np.linspace(xs[0], xs[-1], AKIMA_GRID)
        curves = Akima1DInterpolator(xs, ys, axis=0)(grid)   # (grid, resamples)
        out[rows] = grid[np.argmin(curves, axis=0)]
    return out


def _bootstrap_residuals(x: np.ndarray, y: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Residual bootstrap of the parabola: the design (grid of x) stays fixed, residuals are resampled
    (inflated by sqrt(n/(n-3)) for the fitted dof). Undefined (NaN) with exactly 3 points."""
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
    """Parabola ln-optimum for n_boot bootstrap resamples of one budget (see BOOT_METHODS)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "runs":
        return _bootstrap_runs(x, y, resample_weights(x.size, n_boot, rng))
    if method == "residuals":
        return _bootstrap_residuals(x, y, n_boot, rng)
    raise ValueError(f"unknown bootstrap method {method!r}")


@dataclass
class BudgetOptimum:
    """One budget on one axis: the shape-free estimate, the parabola beside it, and the QC verdict."""

    budget: float
    axis: str
    run_ids: list[str]  # runs that entered the fits (flagged points removed unless kept)
    fit: ParabolaFit
    # method -> ln-optima of the bootstrap resamples: "akima" (the estimate's), "runs" and
    # "residuals" (the parabola's)
    boot: dict[str, np.ndarray] = field(default_factory=dict)
    akima_x_opt: float = float("nan")  # ln of the Akima spline's minimum: THE estimate
    akima_y_opt: float = float("nan")
    flags: list[qc.Flag] = field(default_factory=list)  # budget-level QC
    points_excluded: list[dict] = field(default_factory=list)  # {"value", "loss", "run_id", "code", "reason"}
    notes: list[str] = field(default_factory=list)  # informative, not exclusions (e.g. replicates)

    @property
    def akima_opt(self) -> float:
        return float(np.exp(self.akima_x_opt))

    @property
    def x_opt(self) -> float:
        """ln of the estimate: the Akima minimum, or the best observed point when there is no spline."""
        return self.akima_x_opt if np.isfinite(self.akima_x_opt) else self.fit.x_opt

    @property
    def opt(self) -> float:
        return float(np.exp(self.x_opt))

    @property
    def y_opt(self) -> float:
        return self.akima_y_opt if np.isfinite(self.akima_y_opt) else self.fit.y_opt

    @property
    def ok(self) -> bool:
        """No excluding budget-level QC flag: the estimate may enter the power law."""
        return not any(f.excludes for f in self.flags)

    @property
    def reasons(self) -> list[str]:
        """Why the budget is left out (excluding flags only)."""
        return [f"{f.code}: {f.reason}" for f in self.flags if f.excludes]

    @property
    def warnings(self) -> list[str]:
        """Flags that warn without excluding."""
        return [f"{f.code}: {f.reason}" for f in self.flags if not f.excludes]

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Run-bootstrap percentile interval of the estimate (Akima minimum)."""
        return self.boot_interval("akima", level)

    def boot_interval(self, method: str = "runs", level: float = LEVEL) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        good = self.boot[method][np.isfinite(self.boot[method])]
        if good.size < 10:
            return float("nan"), float("nan")
        lo, hi = percentile_interval(good, level)
        return float(np.exp(lo)), float(np.exp(hi))


def budget_optimum(budget: float, axis: str, values: np.ndarray, loss: np.ndarray, run_ids: list[str],
                   n_boot: int = 0, rng: np.random.Generator | None = None,
                   keep_flagged: bool = False, cfg: qc.QCConfig = qc.QCConfig()) -> BudgetOptimum:
    """QC, estimate and bootstrap for one budget's runs (values: the allocation variable, > 0)."""
    rng = rng or np.random.default_rng(0)
    x_all = np.log(np.asarray(values, dtype=float))
    y_all = np.asarray(loss, dtype=float)
    point_flags, notes = qc.point_flags(x_all, y_all, cfg)
    keep = np.ones(x_all.size, bool)
    if not keep_flagged:
        keep[list(point_flags)] = False
    x, y = x_all[keep], y_all[keep]
    ids = [r for r, k in zip(run_ids, keep) if k]
    fit = fit_parabola(x, y)
    ax, ay = akima_optimum(x, y)
    # The budget's verdict (curvature, edges, ...) is always on the points left after outlier and
    # duplicate removal, also when --keep-flagged keeps them in the fit.
    clean = np.ones(x_all.size, bool)
    clean[list(point_flags)] = False
    if clean.all() or not keep_flagged:
        flags = qc.budget_flags(x, y, fit, ax, axis, cfg)
    else:
        xc, yc = x_all[clean], y_all[clean]
        flags = qc.budget_flags(xc, yc, fit_parabola(xc, yc), akima_optimum(xc, yc)[0], axis, cfg)
    boot: dict[str, np.ndarray] = {}
    if n_boot and np.unique(x).size >= MIN_DISTINCT_X:
        w = resample_weights(x.size, n_boot, rng)
        boot["akima"] = _bootstrap_akima(x, y, w)
        boot["runs"] = _bootstrap_runs(x, y, w)
        boot["residuals"] = _bootstrap_residuals(x, y, n_boot, rng)
    excluded = [{"value": float(np.exp(x_all[i])), "loss": float(y_all[i]), "run_id": str(run_ids[i]),
                 "code": f.code, "reason": f.reason + (" (kept: --keep-flagged)" if keep_flagged else "")}
                for i, f in sorted(point_flags.items())]
    return BudgetOptimum(float(budget), axis, ids, fit, boot, ax, ay, flags, excluded, notes)


def isoflop_optima(df: pd.DataFrame, axis: str, n_boot: int = 0,
                   rng: np.random.Generator | None = None,
                   keep_flagged: bool = False, cfg: qc.QCConfig = qc.QCConfig()) -> list[BudgetOptimum]:
    """Per flop_budget, QC + shape-free optimum of ``loss`` vs ln(df[column]) (``axis`` is a column
    name or an AXIS_COLUMN key). Runs are named by the ``run`` column when present (else run_id).
    Runs without a FLOP budget (token-budget runs) are ignored."""
    column = AXIS_COLUMN.get(axis, axis)
    rng = rng or np.random.default_rng(0)
    data = df[np.isfinite(df["flop_budget"].to_numpy(dtype=float))]
    out: list[BudgetOptimum] = []
    for budget, grp in data.groupby("flop_budget", sort=True):
        v = grp[column].to_numpy(dtype=float)
        grp = grp[np.isfinite(v) & (v > 0)]
        out.append(budget_optimum(float(budget), axis, grp[column].to_numpy(dtype=float),
                                  grp["loss"].to_numpy(dtype=float),
                                  list(grp["run" if "run" in grp else "run_id"].astype(str)),
                                  n_boot, rng, keep_flagged, cfg))
    return out


def optima_table(optima: list[BudgetOptimum]) -> pd.DataFrame:
    """One row per budget: the estimate with its interval, the parabola beside it, QC flags."""
    rows = []
    for o in optima:
        a_lo, a_hi = o.interval()
        b_lo, b_hi = o.boot_interval("runs")
        rows.append({
            "budget": o.budget,
            "n_runs": len(o.run_ids),
            "optimum": o.opt,
            "opt_lo": a_lo, "opt_hi": a_hi,
            "parabola_optimum": o.fit.opt,
            "parabola_lo": b_lo, "parabola_hi": b_hi,
            "loss_at_opt": o.y_opt,
            "curvature_t": o.fit.t_curvature,
            "dof": o.fit.dof,
            "ok": o.ok,
            "flags": "; ".join(o.reasons + [f"warning: {w}" for w in o.warnings]),
            "points_excluded": len(o.points_excluded),
        })
    return pd.DataFrame(rows)


def isoflop_supported(df: pd.DataFrame, axis: str = "mean_recurrence",
                      min_budgets: int = 2) -> tuple[bool, str]:
    """Whether the runs support an isoFLOP analysis on ``axis``: >= min_budgets budgets with >= 3 distinct
    values of it."""
    column = AXIS_COLUMN.get(axis, axis)
    data = df[np.isfinite(df["flop_budget"].to_numpy(dtype=float))]
    if data.empty:
        return False, "no runs with a FLOP budget"
    if column not in data or not np.isfinite(data[column].to_numpy(dtype=float)).any():
        return False, f"no {column} values"
    counts = data.groupby("flop_budget")[column].nunique()
    enough = int((counts >= MIN_DISTINCT_X).sum())
    if enough < min_budgets:
        return False, (f"{enough} budget(s) with >= {MIN_DISTINCT_X} distinct {column} "
                       f"values (need {min_budgets})")
    return True, f"{enough} budgets with >= {MIN_DISTINCT_X} distinct {column} values"
