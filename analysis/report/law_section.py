"""The "Parametric law" section of a report: per fitted law (analysis.laws.results) its parameters with
bootstrap intervals, held-out errors, residual figure and warnings; nothing is fitted here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL
from analysis.laws.bootstrap import BOOTSTRAP_METHOD
from analysis.laws.forms import LAWS
from analysis.laws.point_fit import FitSettings
from analysis.laws.results import LawResult
from analysis.report.figures import plot_law_fit
from analysis.report.markdown import figure_link, fmt, interval, table

HOLDOUT_LABEL = {"flop_budget": "largest budget", "n_params": "largest model",
                 "n_params_unrolled": "largest unrolled model"}
SHOW = {"chinchilla": ("E", "A", "alpha", "B", "beta", "a_opt", "b_opt"),
        "parcae": ("E", "A", "alpha", "B", "beta", "a_opt", "b_opt"),
        "recurrence": ("E", "A", "alpha", "B", "beta", "phi", "r_opt", "mu_opt", "b_opt"),
        "unified": ("E", "A", "alpha", "B", "beta", "Z", "z")}


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


def law_section(usable: pd.DataFrame, results: list[LawResult], supported: tuple[bool, str], n_boot: int,
                out_dir: Path | None = None) -> str:
    """The section's markdown from fitted laws (analysis.laws.results.fit_sweep_laws); supported: its
    law_supported verdict on the runs. Residual figures go to out_dir/figures when out_dir is given."""
    head = "## Parametric law\n\n"
    ok, why = supported
    if not ok:
        return head + f"Skipped: {why}."
    if not results:
        return head + "Skipped: too few runs with complete inputs."
    s = FitSettings()
    blocks = [head + (
        f"Data: {why}. Objective: {s.describe()}. Starts: variable projection — for every "
        "grid point of the exponents the linear coefficients (E, A, B[, Z]) are solved by "
        "non-negative least squares and the best grid points refined jointly. Uncertainty: "
        f"{n_boot} bootstrap resamples of the **runs** (all test-time points of a run move "
        f"together), {BOOTSTRAP_METHOD}; {100 * LEVEL:g} % percentile intervals. "
        "Allocation exponents come from each law's own compute model (analysis/laws/allocation.py): "
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
        if out_dir is not None:
            png = plot_law_fit(res.design, res.fit.predict(res.design), res.name,
                               out_dir / "figures" / f"law_{res.name}_residuals", meta=usable)
            lines.append(figure_link(png, out_dir, f"law {res.name}: predicted vs observed, residuals"))
        if res.warnings:
            lines.append("Warnings: " + "; ".join(res.warnings) + ".")
        blocks.append("\n\n".join(lines))
    return "\n\n".join(blocks)
