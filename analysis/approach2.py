"""Approach 2 on one allocation axis of one group of runs: QC'd per-budget optima, the power law
through the shape-free optima (the estimate) and, beside it, the one through the parabola vertices.

No silent fallback: with fewer clean budgets than ``min_budgets`` there is no power law, and ``reason``
says which budgets were left out and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.isoflop import LEVEL, BudgetOptimum, isoflop_optima
from analysis.powerlaw import MIN_BUDGETS, NoPowerLaw, PowerLawFit, powerlaw_from_optima

# The paper's compute-optimal exponents (Parcae, arXiv 2604.12946, §5.2 and Fig. 5: µ_rec* ∝ C^0.40,
# D* ∝ C^0.78 at fixed model size). Shown beside our fits only; nothing is fitted towards them.
PAPER_GAMMA = {"mean_recurrence": 0.40, "tokens": 0.78}
PAPER_SOURCE = "Parcae (arXiv 2604.12946) §5.2, Fig. 5"
LABEL = {"mean_recurrence": "µ_rec*", "tokens": "D*", "params": "N*"}
XLABEL = {"mean_recurrence": "mean recurrence µ_rec", "tokens": "training tokens D",
          "params": "parameters N"}


@dataclass
class Options:
    """Analysis settings shared by the MLflow and the table path (CLI flags of python -m analysis)."""

    n_boot: int = 1000
    seed: int = 0
    min_budgets: int = MIN_BUDGETS
    keep_flagged: bool = False


@dataclass
class AxisResult:
    group: str
    axis: str
    optima: list[BudgetOptimum]
    law: PowerLawFit | None = None       # through the shape-free (Akima) optima: the estimate
    parabola: PowerLawFit | None = None  # through the parabola vertices, same budgets
    reason: str | None = None            # why there is no power law
    notes: list[str] = field(default_factory=list)
    # The paper's exponent, only where it applies: a sweep of µ_rec at fixed model size (Parcae §5.2)
    paper: float | None = None

    @property
    def interval(self) -> tuple[float, float]:
        return self.law.boot_ci_gamma("runs", LEVEL) if self.law else (float("nan"), float("nan"))

    def budgets_excluded(self) -> dict[str, list[str]]:
        if self.law is None:
            return {f"{o.budget:.6g}": o.reasons or ["no power law"] for o in self.optima}
        used = set(self.law.C.tolist())
        return {f"{o.budget:.6g}": o.reasons or ["no finite optimum"]
                for o in self.optima if o.budget not in used}

    def points_excluded(self) -> list[dict]:
        return [{"C": o.budget, self.axis: p["value"], "loss": p["loss"], "run": p["run_id"],
                 "reason": f"{p['code']}: {p['reason']}"} for o in self.optima for p in o.points_excluded]


def bias_note(law: PowerLawFit, parabola: PowerLawFit | None) -> str | None:
    """A note when the parabola's exponent falls outside the shape-free estimate's interval."""
    if parabola is None:
        return None
    lo, hi = law.boot_ci_gamma("runs", LEVEL)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= parabola.gamma <= hi:
        return None
    return (f"the parabola's exponent {parabola.gamma:.3f} lies outside the shape-free estimate's 95 % "
            f"interval [{lo:.3f}, {hi:.3f}]: a parabola is biased on these curves (asymmetric or "
            "off-centre grids); the shape-free value is the estimate")


def approach2(df: pd.DataFrame, group: str, axis: str, opts: Options,
              rng: np.random.Generator, looped: bool = True) -> AxisResult:
    """looped: the runs vary µ_rec at fixed model size, so the paper's exponents are comparable."""
    optima = isoflop_optima(df, axis, n_boot=opts.n_boot, rng=rng, keep_flagged=opts.keep_flagged)
    res = AxisResult(group, axis, optima, paper=PAPER_GAMMA.get(axis) if looped else None)
    try:
        res.law = powerlaw_from_optima(optima, "akima", opts.min_budgets, opts.keep_flagged)
    except NoPowerLaw as err:
        res.reason = str(err)
        at_one = [o for o in optima if any("looping does not pay" in f.reason for f in o.flags)]
        if at_one:
            res.reason += (f"; at {len(at_one)} of {len(optima)} budget(s) the optimum is µ_rec = 1: "
                           "looping does not pay there")
        return res
    kept = [o for o in optima if o.budget in set(res.law.C.tolist())]
    try:
        res.parabola = powerlaw_from_optima(kept, "parabola", opts.min_budgets, keep_flagged=True)
    except NoPowerLaw:
        res.parabola = None
    note = bias_note(res.law, res.parabola)
    if note:
        res.notes.append(note)
    return res
