"""Every parametric law a set of runs supports, fitted (Chinchilla Approach 3 style: point fit, run
bootstrap, diagnostics, held-out checks and the law's own compute-optimal allocation)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL
from analysis.laws.allocation import allocation_samples, law_allocation
from analysis.laws.bootstrap import LawBootstrap, bootstrap_law
from analysis.laws.diagnostics import identifiability_warnings, outlier_sensitivity
from analysis.laws.forms import Design, design_from_frame
from analysis.laws.point_fit import LawFit, fit_law

MIN_RUNS = 6
# distinct values of each law input (law_supported says why three)
MIN_DISTINCT = 3


@dataclass
class LawResult:
    name: str
    design: Design
    fit: LawFit
    boot: LawBootstrap | None
    warnings: list[str] = field(default_factory=list)
    holdouts: list[dict[str, float]] = field(default_factory=list)
    # allocation exponents from the law's own compute model (analysis.laws.allocation); their bootstrap
    # draws are added to boot.samples
    allocation: dict[str, float] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters plus the allocation exponents."""
        return {**self.fit.params, **self.allocation}

    def interval(self, name: str, level: float = LEVEL) -> tuple[float, float]:
        """Bootstrap percentile interval of a parameter or allocation exponent."""
        if self.boot is None or name not in self.boot.samples:
            return float("nan"), float("nan")
        return self.boot.interval(name, level)


def size_column(usable: pd.DataFrame) -> str:
    """The law's size input: unrolled parameters for looped runs (Parcae law), else parameters (a table
    without a recurrence column: Chinchilla law)."""
    unrolled = usable["n_params_unrolled"].astype(float)
    return "n_params_unrolled" if np.isfinite(unrolled).any() else "n_params"


def law_supported(usable: pd.DataFrame) -> tuple[bool, str]:
    """>= 6 runs, >= 3 distinct values of N (unrolled) or mu_rec, and >= 3 of D.

    Three, not two: a term A / X^a has a scale and an exponent, and beside the floor E those are three
    unknowns along X. With two values of X any exponent fits once A and E move with it, so the law is
    unidentified by design; its bootstrap then finds a different minimum on every resample (each one
    refitted cold, minutes on a laptop) to report an interval that says nothing."""
    size = size_column(usable)
    ok = usable[np.isfinite(usable[size].astype(float))
                & np.isfinite(usable["tokens"].astype(float))]
    n_n = max(ok[size].nunique(), ok["mean_recurrence"].nunique())
    n_d = ok["tokens"].nunique()
    if len(ok) < MIN_RUNS or n_n < MIN_DISTINCT or n_d < MIN_DISTINCT:
        return False, (f"needs >= {MIN_RUNS} runs with >= {MIN_DISTINCT} distinct N (or mu_rec) and "
                       f">= {MIN_DISTINCT} distinct D; have {len(ok)} runs, {n_n} N/mu_rec values, "
                       f"{n_d} D values")
    return True, f"{len(ok)} runs, {n_n} distinct N(mu_rec), {n_d} distinct D"


def _holdout_top(law_name: str, usable: pd.DataFrame, column: str) -> dict[str, float] | None:
    """Fit on the runs below the largest value of `column`, predict the runs at it: mean/max ARE."""
    v = usable[column].astype(float)
    if np.isfinite(v).sum() < MIN_RUNS or v.nunique() < 3:
        return None
    top = v.max()
    train, test = usable[v < top], usable[v == top]
    dtr, dte = design_from_frame(train, law_name), design_from_frame(test, law_name)
    if dtr.n_clusters < MIN_RUNS or dte.n == 0:
        return None
    fit = fit_law(law_name, dtr)
    are = np.abs(fit.predict(dte) - dte.loss) / dte.loss
    return {"column": column, "value": float(top), "n_train": dtr.n_clusters, "n_test": dte.n,
            "mean_are": float(are.mean()), "max_are": float(are.max())}


def holdout_largest_budget(law_name: str, usable: pd.DataFrame) -> dict[str, float] | None:
    """Leave the largest FLOP budget out (the extrapolation a compute-optimal law is used for)."""
    return _holdout_top(law_name, usable, "flop_budget")


def holdout_largest_model(law_name: str, usable: pd.DataFrame) -> dict[str, float] | None:
    """Leave the largest model out: by parameters when sizes vary, else by unrolled parameters
    (the deepest recurrence of a single model family)."""
    for column in ("n_params", "n_params_unrolled"):
        if usable[column].astype(float).nunique() >= 3:
            return _holdout_top(law_name, usable, column)
    return None


def candidate_laws(usable: pd.DataFrame) -> list[str]:
    """The laws the runs' columns support (each still needs MIN_RUNS runs with complete inputs)."""
    candidates = ["parcae" if size_column(usable) == "n_params_unrolled" else "chinchilla"]
    split = usable[usable["mean_recurrence"].astype(float) > 1]
    if usable["mean_recurrence"].nunique() >= 3 and len(split):
        candidates.append("recurrence")
    if any(c.startswith("loss_T") for c in usable.columns):
        candidates.append("unified")
    return candidates


def fit_sweep_laws(usable: pd.DataFrame, n_boot: int, seed: int,
                   labels: dict[str, str] | None = None) -> list[LawResult]:
    """Every law the runs support; labels: run_id -> name for warnings that name runs."""
    out = []
    for name in candidate_laws(usable):
        design = design_from_frame(usable, name)
        if design.n_clusters < MIN_RUNS:
            continue
        fit = fit_law(name, design)
        boot = bootstrap_law(name, design, n_boot=n_boot, seed=seed, fit=fit) if n_boot > 0 else None
        warns = (fit.flags + identifiability_warnings(fit, boot, design, LEVEL)
                 + outlier_sensitivity(fit, boot, design, LEVEL, labels))
        holds = []
        if name != "unified":
            holds = [h for h in (holdout_largest_budget(name, usable),
                                 holdout_largest_model(name, usable)) if h]
        res = LawResult(name, design, fit, boot, warns, holds)
        res.allocation = law_allocation(name, fit.params, design.raw)
        if boot is not None and res.allocation:
            # the law's own allocation replaces derived_quantities' C ∝ N·D one where they differ
            boot.samples.update(allocation_samples(name, boot.samples, design.raw))
        out.append(res)
    return out
