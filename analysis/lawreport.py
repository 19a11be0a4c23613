"""The "Parametric law" section of the sweep report (Chinchilla Approach 3 style
fits of the laws in ``analysis.laws`` with a run-level bootstrap)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.allocation import allocation_samples, law_allocation
from analysis.fit import (BOOTSTRAP_METHOD, FitSettings, LawBootstrap, LawFit, bootstrap_law, fit_law,
                          identifiability_warnings)
from analysis.laws import LAWS, Design, design_from_frame
from analysis.markdown import figure_link, fmt, interval, table
from analysis.plots import plot_law_fit
from analysis.sensitivity import outlier_sensitivity

MIN_RUNS = 6
LEVEL = 0.95
HOLDOUT_LABEL = {"flop_budget": "largest budget", "n_params": "largest model",
                 "n_params_unrolled": "largest unrolled model"}
SHOW = {"chinchilla": ("E", "A", "alpha", "B", "beta", "a_opt", "b_opt"),
        "parcae": ("E", "A", "alpha", "B", "beta", "a_opt", "b_opt"),
        "recurrence": ("E", "A", "alpha", "B", "beta", "phi", "r_opt", "mu_opt", "b_opt"),
        "unified": ("E", "A", "alpha", "B", "beta", "Z", "z")}


@dataclass
class LawResult:
    name: str
    design: Design
    fit: LawFit
    boot: LawBootstrap | None
    warnings: list[str] = field(default_factory=list)
    holdouts: list[dict[str, float]] = field(default_factory=list)
    # allocation exponents from the law's own compute model (analysis.allocation); their bootstrap
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
    """>= 6 runs, >= 2 distinct values of N (unrolled) or mu_rec, and >= 2 of D."""
    size = size_column(usable)
    ok = usable[np.isfinite(usable[size].astype(float))
                & np.isfinite(usable["tokens"].astype(float))]
    n_n = max(ok[size].nunique(), ok["mean_recurrence"].nunique())
    n_d = ok["tokens"].nunique()
    if len(ok) < MIN_RUNS or n_n < 2 or n_d < 2:
        return False, (f"needs >= {MIN_RUNS} runs with >= 2 distinct N (or mu_rec) and D; "
                       f"have {len(ok)} runs, {n_n} N/mu_rec values, {n_d} D values")
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


def fit_sweep_laws(usable: pd.DataFrame, n_boot: int, seed: int,
                   labels: dict[str, str] | None = None) -> list[LawResult]:
    """Every law the runs support; labels: run_id -> name for warnings that name runs."""
    out = []
    candidates = ["parcae" if size_column(usable) == "n_params_unrolled" else "chinchilla"]
    split = usable[usable["mean_recurrence"].astype(float) > 1]
    if usable["mean_recurrence"].nunique() >= 3 and len(split):
        candidates.append("recurrence")
    if any(c.startswith("loss_T") for c in usable.columns):
        candidates.append("unified")
    for name in candidates:
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


def _param_table(res: LawResult) -> str:
    rows = []
    params = res.params
    for k in SHOW[res.name]:
        if k not in params:
            continue
        lo, hi = res.interval(k, LEVEL)
        rows.append({"parameter": k, "estimate": fmt(params[k], 5),
                     f"{100 * LEVEL:g} % bootstrap": interval(lo, hi)})
    return table(pd.DataFrame(rows))


def law_section(usable: pd.DataFrame, n_boot: int, seed: int,
                report_warnings: list[str], metrics: dict[str, float],
                out_dir: Path | None = None, results: list[LawResult] | None = None) -> str:
    """The section's markdown; residual figures go to out_dir/figures when out_dir is given.

    results: fits already made by fit_sweep_laws (fitted here when None)."""
    head = "## Parametric law\n\n"
    ok, why = law_supported(usable)
    if not ok:
        return head + f"Skipped: {why}."
    results = fit_sweep_laws(usable, n_boot, seed) if results is None else results
    if not results:
        return head + "Skipped: too few runs with complete inputs."
    s = FitSettings()
    blocks = [head + (
        f"Data: {why}. Objective: {s.describe()}. Starts: variable projection — for every "
        "grid point of the exponents the linear coefficients (E, A, B[, Z]) are solved by "
        "non-negative least squares and the best grid points refined jointly. Uncertainty: "
        f"{n_boot} bootstrap resamples of the **runs** (all test-time points of a run move "
        f"together), {BOOTSTRAP_METHOD}; {100 * LEVEL:g} % percentile intervals. "
        "Allocation exponents come from each law's own compute model (analysis/allocation.py): "
        "a_opt = β/(α+β), b_opt = α/(α+β) for the Chinchilla and Parcae laws (N_opt ∝ C^a_opt, "
        "D_opt ∝ C^b_opt under C ∝ N·D); for the recurrence law, at fixed N_once and N_rec and "
        "C ∝ (N_once + r·N_rec)·D, mu_opt = d ln r*/d ln C and b_opt = d ln D*/d ln C at the optimum "
        "r_opt of the runs' geometric-mean compute (with N_once → 0: β/(αφ+β) and αφ/(αφ+β)). A and B are strongly tied to α and β; read α, β, E "
        "and the predictions, not A or B alone.\n\n"
        "Definitions: N(µ_rec) = `n_params_unrolled` = total parameters + (µ_rec − 1) × "
        "recurrent-core parameters (the fully unrolled network at the training µ_rec); "
        "N_rec = (n_params_unrolled − n_params)/(µ_rec − 1) per model (median over its runs "
        "with µ_rec > 1), N_once = n_params − N_rec, r = µ_rec; D = training tokens.")]
    for res in results:
        law = LAWS[res.name]
        rmse = float(np.sqrt(np.mean((np.log(res.fit.predict(res.design)) -
                                      np.log(res.design.loss)) ** 2)))
        lines = [f"### `{res.name}`: {law.formula}",
                 f"{res.design.n} points from {res.design.n_clusters} runs; Σ Huber = "
                 f"{res.fit.objective:.4g}; RMS log residual {rmse:.3g}; converged: "
                 f"{fmt(res.fit.success)} ({res.fit.nit} iterations).",
                 _param_table(res)]
        for h in res.holdouts:
            what = HOLDOUT_LABEL[h["column"]]
            lines.append(f"Held out ({what}): fitted on {h['column']} < {h['value']:.4g} "
                         f"({h['n_train']} runs), predicting the {h['n_test']} runs at "
                         f"{h['column']} = {h['value']:.4g}: mean ARE {100 * h['mean_are']:.2f} %, "
                         f"max {100 * h['max_are']:.2f} %.")
            suffix = "" if h["column"] == "flop_budget" else "_model"
            metrics[f"law.{res.name}.holdout{suffix}_mean_are"] = h["mean_are"]
        if out_dir is not None:
            png = plot_law_fit(res.design, res.fit.predict(res.design), res.name,
                               out_dir / "figures" / f"law_{res.name}_residuals")
            lines.append(figure_link(png, out_dir, f"law {res.name}: predicted vs observed, residuals"))
        for w in res.warnings:
            report_warnings.append(f"parametric law `{res.name}`: {w}")
        if res.warnings:
            lines.append("Warnings: " + "; ".join(res.warnings) + ".")
        for k in ("alpha", "beta", "E", "phi", "z"):
            if k in res.fit.params:
                metrics[f"law.{res.name}.{k}"] = res.fit.params[k]
        blocks.append("\n\n".join(lines))
    return "\n\n".join(blocks)
