"""IsoFLOP profiles (Chinchilla "Approach 2"): per FLOP budget, the minimum of loss against the log of
an allocation variable (parameters, tokens, mean recurrence) is the compute-optimal value at that budget.

The runs arrive screened: ``analysis.isoflop.qc.screen`` decided once per row which enter (duplicates,
too few points, off-centre trimming, outliers, weak curvature); this module only estimates. Replicates at
one size (seeds of one grid point) are averaged. Two estimators of the minimum are computed (the parabola
vertex and the Akima spline's minimum, analysis.isoflop.estimator_choice); the group's chosen one is the
estimate, and an optimum at the edge of the kept grid is never used as one (``qc.axis_flags``). Its
interval comes from redrawing the runs' noise (analysis.isoflop.noise), filled in by
analysis.isoflop.approach2 for all budgets of an axis at once (the noise SD is pooled over them).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL, percentile_interval
from analysis.isoflop import qc
from analysis.isoflop.estimator_choice import MINIMA
from analysis.isoflop.profiles import MIN_DISTINCT_X, ParabolaFit, averaged, fit_parabola

# axis name (summary.json, CLI) -> frame column
AXIS_COLUMN = {"params": "n_params", "tokens": "tokens", "mean_recurrence": "mean_recurrence"}


@dataclass
class BudgetOptimum:
    """One budget on one axis: both estimators' minima, the chosen one, draws, and the axis's verdict."""

    budget: float
    axis: str
    run_ids: list[str]  # the used runs of this budget
    fit: ParabolaFit    # the parabola through the per-size means (figures, curvature)
    # estimator -> (ln optimum, loss there) on the data
    minima: dict[str, tuple[float, float]] = field(default_factory=dict)
    # estimator -> ln optima of the noise draws; "<estimator>_loss" -> the loss there
    boot: dict[str, np.ndarray] = field(default_factory=dict)
    estimator: str = "parabola"
    flags: list[qc.Flag] = field(default_factory=list)  # this axis's verdict on the optimum
    points_excluded: list[dict] = field(default_factory=list)  # rows the QC stage dropped at this budget
    notes: list[str] = field(default_factory=list)
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    seeds: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def akima_x_opt(self) -> float:
        return self.minima.get("akima", (float("nan"),))[0]

    @property
    def x_opt(self) -> float:
        """ln of the estimate (the chosen estimator's minimum)."""
        return self.minima.get(self.estimator, (float("nan"), float("nan")))[0]

    @property
    def opt(self) -> float:
        return float(np.exp(self.x_opt))

    @property
    def y_opt(self) -> float:
        return self.minima.get(self.estimator, (float("nan"), float("nan")))[1]

    @property
    def ok(self) -> bool:
        """No excluding flag: the estimate may enter the power law."""
        return not any(f.excludes for f in self.flags) and np.isfinite(self.x_opt)

    @property
    def reasons(self) -> list[str]:
        return [f"{f.code}: {f.reason}" for f in self.flags if f.excludes]

    @property
    def warnings(self) -> list[str]:
        return [f"{f.code}: {f.reason}" for f in self.flags if not f.excludes]

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Interval of the estimate from the noise draws."""
        return self.boot_interval(self.estimator, level)

    @property
    def replicates(self) -> int:
        """The most runs at one size (1: no replicates)."""
        return int(np.unique(self.x, return_counts=True)[1].max()) if self.x.size else 0

    def boot_interval(self, method: str, level: float = LEVEL) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        good = self.boot[method][np.isfinite(self.boot[method])]
        if good.size < 10:
            return float("nan"), float("nan")
        lo, hi = percentile_interval(good, level)
        return float(np.exp(lo)), float(np.exp(hi))


def budget_optimum(budget: float, axis: str, values: np.ndarray, loss: np.ndarray, run_ids: list[str],
                   cfg: qc.QCConfig = qc.QCConfig(), seeds: np.ndarray | None = None,
                   estimator: str = "parabola") -> BudgetOptimum:
    """Both estimators' minima of one budget's used runs (values: the allocation variable, > 0; seeds:
    each run's training seed, NaN where not logged), and the axis's verdict on ``estimator``'s."""
    x = np.log(np.asarray(values, dtype=float))
    y = np.asarray(loss, dtype=float)
    s = np.full(x.size, np.nan) if seeds is None else np.asarray(seeds, dtype=float)
    ux, uy = averaged(x, y) if x.size else (x, y)
    fit = fit_parabola(ux, uy) if ux.size else fit_parabola(np.zeros(1), np.zeros(1))
    minima = ({e: tuple(float(v[0]) for v in MINIMA[e](ux, uy[None, :])) for e in MINIMA}
              if ux.size >= MIN_DISTINCT_X else {})
    o = BudgetOptimum(float(budget), axis, list(run_ids), fit, minima, estimator=estimator, x=x, y=y, seeds=s)
    if (counts := np.unique(x, return_counts=True)[1]).size and (counts > 1).any():
        o.notes.append(f"{int((counts > 1).sum())} size(s) with replicate runs: their losses are averaged")
    o.flags = qc.axis_flags(ux, uy, o.x_opt, axis, *(minima.get(e, (np.nan,))[0] for e in ("parabola", "akima")),
                            cfg=cfg)
    return o


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


def isoflop_optima(df: pd.DataFrame, axis: str, cfg: qc.QCConfig = qc.QCConfig(),
                   dropped: pd.DataFrame | None = None, estimator: str = "parabola") -> list[BudgetOptimum]:
    """Per flop_budget, both estimators' minima of ``loss`` vs ln(df[column]) over the used runs ``df``
    (``axis`` is a column name or an AXIS_COLUMN key); ``dropped``: the rows the QC stage dropped, with
    ``qc_reason`` and ``qc_detail`` (shown beside their budget). Runs are named by the ``run`` column when
    present (else run_id)."""
    column = AXIS_COLUMN.get(axis, axis)
    name = "run" if "run" in df else "run_id"
    out: list[BudgetOptimum] = []
    for budget, grp, seeds in budget_runs(df, axis):
        o = budget_optimum(budget, axis, grp[column].to_numpy(dtype=float), grp["loss"].to_numpy(dtype=float),
                           list(grp[name].astype(str)), cfg, seeds, estimator)
        mixed = _mixed_points(grp, column)
        if mixed:
            o.notes.append(mixed)
        out.append(o)
    if dropped is not None and len(dropped):
        # budgets the QC stage emptied still appear (no estimate), so their runs are drawn and named
        have = {o.budget for o in out}
        for budget, _, _ in budget_runs(dropped, axis):
            if budget not in have:
                out.append(budget_optimum(budget, axis, np.empty(0), np.empty(0), [], cfg, None, estimator))
        out.sort(key=lambda o: o.budget)
        for o in out:
            mine = dropped[dropped["flop_budget"].astype(float) == o.budget]
            o.points_excluded = [{"value": float(r[column]), "loss": float(r["loss"]), "run_id": str(r[name]),
                                  "code": str(r["qc_reason"]), "reason": str(r["qc_detail"])}
                                 for _, r in mine.iterrows() if np.isfinite(float(r[column])) and float(r[column]) > 0]
    return out


def optima_table(optima: list[BudgetOptimum]) -> pd.DataFrame:
    """One row per budget: the estimate with its interval, both estimators, the verdict."""
    rows = []
    for o in optima:
        lo, hi = o.interval()
        rows.append({
            "budget": o.budget,
            "n_runs": len(o.run_ids),
            "seeds": o.replicates,
            "estimator": o.estimator,
            "optimum": o.opt,
            "opt_lo": lo, "opt_hi": hi,
            "parabola_optimum": float(np.exp(o.minima.get("parabola", (np.nan,))[0])),
            "akima_optimum": float(np.exp(o.akima_x_opt)),
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
