"""IsoFLOP profiles (Chinchilla "Approach 2"): per FLOP budget, the minimum of loss against the log of
an allocation variable (parameters, tokens, mean recurrence) is the compute-optimal value at that budget.

The estimate is shape-free: the minimum of an Akima spline through the budget's points (replicates at
one size, e.g. seeds of one grid point, averaged; so are they for the parabola) on the sampled range, with a run-bootstrap interval (the budget's runs resampled with
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

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from analysis.estimation import LEVEL, percentile_interval, resample_weights
from analysis.isoflop import qc
from analysis.isoflop.profiles import (AKIMA_GRID, MIN_DISTINCT_X, ParabolaFit, akima_optimum, averaged,
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


def _size_means(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample (row of w, multiplicities of the runs): the distinct sizes, the mean loss at each
    (replicates averaged with their multiplicity) and whether the size is present, as (sizes,),
    (resamples, sizes), (resamples, sizes)."""
    ux, inverse = np.unique(x, return_inverse=True)
    indicator = np.eye(ux.size)[inverse]           # (runs, sizes)
    counts = w @ indicator
    present = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(present, ((w * y) @ indicator) / np.where(present, counts, 1.0), 0.0)
    return ux, means, present


def _bootstrap_runs(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Parabola optimum per resample (w: multiplicities). As for the point estimate, the parabola goes
    through the mean loss of each size present in the resample (replicates averaged, every size one
    point), a least-squares solve of a batched 3x3 system; resamples with fewer than 3 distinct x give NaN.
    A resample that loses a grid end has its optimum clipped to the narrower grid: conservative (wide)
    for small designs."""
    ux, means, present = _size_means(x, y, w)
    pw = present.astype(float)
    design = np.vander(ux, 3)
    gram = np.einsum("bi,ij,ik->bjk", pw, design, design)
    rhs = np.einsum("bi,ij,bi->bj", pw, design, means)
    valid = present.sum(axis=1) >= MIN_DISTINCT_X
    gram[~valid] = np.eye(3)  # placeholder; masked below
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    lo = np.where(present, ux, np.inf).min(axis=1)
    hi = np.where(present, ux, -np.inf).max(axis=1)
    best = ux[np.argmin(np.where(present, means, np.inf), axis=1)]
    out = _optimum_rule(coef, lo, hi, best)
    out[~valid] = np.nan
    return out


def _bootstrap_akima(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Akima minimum per resample (same resamples as the parabola's): replicates, including a run drawn
    twice, are averaged with their multiplicity; fewer than 3 distinct x gives NaN. Resamples that
    keep the same sizes share one spline construction (Akima1DInterpolator takes many y columns)."""
    ux, means, present = _size_means(x, y, w)
    out = np.full(w.shape[0], np.nan)
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    for k, mask in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == k)
        if mask.sum() < MIN_DISTINCT_X:
            continue
        xs = ux[mask]
        ys = means[rows][:, mask].T  # (sizes, resamples)
        grid = np.linspace(xs[0], xs[-1], AKIMA_GRID)
        curves = Akima1DInterpolator(xs, ys, axis=0)(grid)   # (grid, resamples)
        out[rows] = grid[np.argmin(curves, axis=0)]
    return out


def _bootstrap_residuals(x: np.ndarray, y: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Residual bootstrap of the parabola through the size means: the design (grid of x) stays fixed,
    residuals are resampled (inflated by sqrt(n/(n-3)) for the fitted dof). Undefined (NaN) with exactly
    3 sizes."""
    x, y = averaged(x, y)
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
    # the kept runs (order of run_ids): ln size, loss and training seed (NaN: not logged); the parabola
    # in ``fit`` goes through their per-size means
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    seeds: np.ndarray = field(default_factory=lambda: np.empty(0))

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

    def seed_interval(self, estimator: str = "akima", level: float = LEVEL) -> tuple[float, float]:
        """Seed-bootstrap interval (each size's replicates resampled, the grid kept); NaN without
        replicates."""
        return self.boot_interval(f"{estimator}_seeds", level)

    @property
    def replicates(self) -> int:
        """The most runs at one size (1: no replicates)."""
        return int(np.unique(self.x, return_counts=True)[1].max()) if self.x.size else 0

    def boot_interval(self, method: str = "runs", level: float = LEVEL) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        good = self.boot[method][np.isfinite(self.boot[method])]
        if good.size < 10:
            return float("nan"), float("nan")
        lo, hi = percentile_interval(good, level)
        return float(np.exp(lo)), float(np.exp(hi))


def within_point_weights(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Seed bootstrap: each size's replicates (its seeds) resampled with replacement, every size kept
    with its replicate count; multiplicities per run, (n_boot, runs)."""
    w = np.zeros((n_boot, x.size))
    for v in np.unique(x):
        idx = np.flatnonzero(x == v)
        w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return w


def budget_optimum(budget: float, axis: str, values: np.ndarray, loss: np.ndarray, run_ids: list[str],
                   n_boot: int = 0, rng: np.random.Generator | None = None,
                   keep_flagged: bool = False, cfg: qc.QCConfig = qc.QCConfig(),
                   seeds: np.ndarray | None = None) -> BudgetOptimum:
    """QC, estimate and bootstrap for one budget's runs (values: the allocation variable, > 0; seeds:
    each run's training seed, NaN where not logged)."""
    rng = rng or np.random.default_rng(0)
    x_all = np.log(np.asarray(values, dtype=float))
    y_all = np.asarray(loss, dtype=float)
    s_all = np.full(x_all.size, np.nan) if seeds is None else np.asarray(seeds, dtype=float)
    point_flags, notes = qc.point_flags(x_all, y_all, cfg)
    keep = np.ones(x_all.size, bool)
    if not keep_flagged:
        keep[list(point_flags)] = False
    x, y = x_all[keep], y_all[keep]
    ids = [r for r, k in zip(run_ids, keep) if k]
    fit = fit_parabola(*averaged(x, y))  # replicates averaged, as for the spline
    ax, ay = akima_optimum(x, y)
    # The budget's verdict (curvature, edges, ...) is always on the points left after outlier and
    # duplicate removal, also when --keep-flagged keeps them in the fit.
    clean = np.ones(x_all.size, bool)
    clean[list(point_flags)] = False
    if clean.all() or not keep_flagged:
        flags = qc.budget_flags(x, y, fit, ax, axis, cfg)
    else:
        xc, yc = x_all[clean], y_all[clean]
        flags = qc.budget_flags(xc, yc, fit_parabola(*averaged(xc, yc)), akima_optimum(xc, yc)[0], axis, cfg)
    boot: dict[str, np.ndarray] = {}
    if n_boot and np.unique(x).size >= MIN_DISTINCT_X:
        w = resample_weights(x.size, n_boot, rng)
        boot["akima"] = _bootstrap_akima(x, y, w)
        boot["runs"] = _bootstrap_runs(x, y, w)
        boot["residuals"] = _bootstrap_residuals(x, y, n_boot, rng)
        if np.unique(x).size < x.size:  # replicates: the seed bootstrap beside the run bootstrap
            ws = within_point_weights(x, n_boot, rng)
            boot["akima_seeds"] = _bootstrap_akima(x, y, ws)
            boot["parabola_seeds"] = _bootstrap_runs(x, y, ws)
    excluded = [{"value": float(np.exp(x_all[i])), "loss": float(y_all[i]), "run_id": str(run_ids[i]),
                 "code": f.code, "reason": f.reason + (" (kept: --keep-flagged)" if keep_flagged else "")}
                for i, f in sorted(point_flags.items())]
    return BudgetOptimum(float(budget), axis, ids, fit, boot, ax, ay, flags, excluded, notes,
                         x, y, s_all[keep])


def _mixed_points(grp: pd.DataFrame, column: str) -> str | None:
    """A note when runs at one size differ in more than the seed (their replicate_of tags differ): the
    spline and the parabola average them as if they were seeds of one grid point."""
    if "replicate_of" not in grp or not grp["replicate_of"].notna().any():
        return None
    mixed = grp.groupby(column)["replicate_of"].nunique()
    mixed = mixed[mixed > 1]
    if mixed.empty:
        return None
    return (f"at {', '.join(f'{v:.4g}' for v in mixed.index)}: runs of more than one configuration (their "
            "`replicate_of` tags differ, so they differ in more than the seed) are averaged as replicates")


def budget_runs(df: pd.DataFrame, axis: str) -> Iterator[tuple[float, pd.DataFrame, np.ndarray | None]]:
    """Per flop_budget in increasing order (runs without one, token-budget runs, are left out): its runs with a
    finite, positive value on ``axis`` (a column name or an AXIS_COLUMN key) and their training seeds (None
    without a ``seed`` column)."""
    column = AXIS_COLUMN.get(axis, axis)
    data = df[np.isfinite(df["flop_budget"].to_numpy(dtype=float))]
    for budget, grp in data.groupby("flop_budget", sort=True):
        v = grp[column].to_numpy(dtype=float)
        grp = grp[np.isfinite(v) & (v > 0)]
        yield float(budget), grp, (grp["seed"].to_numpy(dtype=float, na_value=np.nan) if "seed" in grp else None)


def isoflop_optima(df: pd.DataFrame, axis: str, n_boot: int = 0,
                   rng: np.random.Generator | None = None,
                   keep_flagged: bool = False, cfg: qc.QCConfig = qc.QCConfig()) -> list[BudgetOptimum]:
    """Per flop_budget, QC + shape-free optimum of ``loss`` vs ln(df[column]) (``axis`` is a column
    name or an AXIS_COLUMN key). Runs are named by the ``run`` column when present (else run_id); runs
    at one size of one budget (seeds of one grid point) are replicates, averaged by both estimators;
    their ``seed`` column, when present, pairs them across sizes (analysis.isoflop.seeds). Runs without
    a FLOP budget (token-budget runs) are ignored."""
    column = AXIS_COLUMN.get(axis, axis)
    rng = rng or np.random.default_rng(0)
    out: list[BudgetOptimum] = []
    for budget, grp, seeds in budget_runs(df, axis):
        o = budget_optimum(budget, axis, grp[column].to_numpy(dtype=float),
                           grp["loss"].to_numpy(dtype=float),
                           list(grp["run" if "run" in grp else "run_id"].astype(str)),
                           n_boot, rng, keep_flagged, cfg, seeds)
        mixed = _mixed_points(grp, column)
        if mixed:
            o.notes.append(mixed)
        out.append(o)
    return out


def optima_table(optima: list[BudgetOptimum]) -> pd.DataFrame:
    """One row per budget: the estimate with its interval, the parabola beside it, QC flags."""
    rows = []
    for o in optima:
        a_lo, a_hi = o.interval()
        b_lo, b_hi = o.boot_interval("runs")
        s_lo, s_hi = o.seed_interval("akima")
        rows.append({
            "budget": o.budget,
            "n_runs": len(o.run_ids),
            "seeds": o.replicates,
            "optimum": o.opt,
            "opt_lo": a_lo, "opt_hi": a_hi,
            "seed_lo": s_lo, "seed_hi": s_hi,
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
