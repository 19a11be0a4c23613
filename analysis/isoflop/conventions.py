"""Compute-counting conventions: how the isoFLOP exponents of a sweep move with what is counted.

One public log measured N* ∝ C^0.37, 0.54 or 0.70 from one sweep, depending only on which parameters
were counted; a looped model widens the choice (issue 22). For the platform's own sweeps the optimum of
every budget is re-read on each parameter count, and the budgets re-valued under each FLOP count:

* FLOPs: ``reference`` — the nominal budget the sweep planned (derived.flops_per_token × tokens, the
  paper-style count); ``executed`` — derived.executed_flops_per_token × tokens, what the kernels run
  (logged by newer runs only; "not logged" otherwise). Under executed FLOPs a budget is valued at what its
  compute-optimal run executes: the budget times the executed/reference ratio interpolated (in log
  space) at the budget's optimum. A ratio that is the same for every run moves no exponent; one that
  grows with µ_rec (or size) does, because the optimum moves along the grid as C grows.
* parameters: ``unique`` (derived.n_params, what a checkpoint holds), ``unrolled`` (derived.n_params_unrolled:
  the recurrent core counted µ_rec times, what the compute scales with), ``without embedding``
  (derived.n_params − derived.n_params_embedding).

The default, named in the report: reference FLOPs and unique parameters — the budget the sweep was
planned in does not change with kernel choices, and unique parameters are what a deployed model holds
(the Parcae law's size is the unrolled count, because its compute scales with it).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from analysis.estimation import not_identified
from analysis.isoflop.approach2 import approach2, main_group
from analysis.isoflop.powerlaw import NoPowerLaw, powerlaw_from_optima
from analysis.isoflop.optima import isoflop_supported
from analysis.options import Options

FLOPS = {"reference": "flops_per_token", "executed": "executed_flops_per_token"}
PARAMS = {"unique": "n_params", "unrolled": "n_params_unrolled", "without embedding": "n_params_no_embedding"}
DEFAULT = ("reference", "unique")
DEFAULT_WHY = ("reference FLOPs and unique parameters: the budget the sweep was planned in does not move "
               "with kernel choices, and unique parameters are what a trained model holds")


def _logged(df: pd.DataFrame, column: str) -> bool:
    return column in df and bool(np.isfinite(df[column].astype(float)).all())


def _cell(law, lo: float, hi: float) -> str:
    why = not_identified(law.gamma, lo, hi)
    ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
    return f"not identified ({why})" if why else f"{law.gamma:.3f}{ci}"


def _executed(r, runs: pd.DataFrame, column: str, opts: Options) -> str:
    """The exponent of the same optima with each budget valued in executed FLOPs (module docstring)."""
    revalued = []
    for o in r.optima:
        sel = runs[runs["flop_budget"].astype(float) == o.budget]
        v = np.log(sel[column].astype(float).to_numpy())
        ratio = np.log((sel[FLOPS["executed"]].astype(float) / sel[FLOPS["reference"]].astype(float)).to_numpy())
        order = np.argsort(v)
        x = o.x_opt
        revalued.append(replace(o, budget=o.budget * float(np.exp(np.interp(x, v[order], ratio[order])))))
    try:
        law = powerlaw_from_optima(revalued, r.law.estimator, opts.min_budgets, opts.keep_flagged)
    except NoPowerLaw:
        return "no power law"
    return _cell(law, *law.boot_ci_gamma())


def convention_table(df: pd.DataFrame, group: str, opts: Options) -> pd.DataFrame:
    """One row per parameter convention (the N* optimum re-read on that count) and one for D*, one column
    per FLOP convention: the exponent with its 95 % interval, or why there is none."""
    runs = df.copy()
    runs["n_params_no_embedding"] = (runs["n_params"].astype(float) - runs["n_params_embedding"].astype(float)
                                     if "n_params_embedding" in runs else np.nan)
    executed = _logged(runs, FLOPS["executed"]) and _logged(runs, FLOPS["reference"])
    rows = []
    for label, column in [(f"N* ({p})", col) for p, col in PARAMS.items()] + [("D*", "tokens")]:
        row = {"quantity": label}
        if not _logged(runs, column):
            rows.append({**row, "reference FLOPs": "not logged", "executed FLOPs": "not logged"})
            continue
        ok, _ = isoflop_supported(runs, column, opts.min_budgets)
        if not ok:
            text = "not varied at fixed budget"
            rows.append({**row, "reference FLOPs": text, "executed FLOPs": text})
            continue
        r = approach2(runs, group, column, opts, np.random.default_rng(opts.seed), looped=False)
        if r.law is None:
            rows.append({**row, "reference FLOPs": "no power law", "executed FLOPs": "no power law"})
            continue
        row["reference FLOPs"] = _cell(r.law, *r.interval)
        row["executed FLOPs"] = _executed(r, runs, column, opts) if executed else "not logged"
        rows.append(row)
    return pd.DataFrame(rows)


def convention_entry(usable: pd.DataFrame, opts: Options) -> dict:
    """summary.json["conventions"] of a sweep: the table on its main isoFLOP group, and the default."""
    name, runs, _ = main_group(usable)
    return {"group": name, "default": {"flops": DEFAULT[0], "params": DEFAULT[1]}, "why": DEFAULT_WHY,
            "table": convention_table(runs, name, opts).to_dict("records")}
