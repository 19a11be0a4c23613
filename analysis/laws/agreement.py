"""Approach 2 against Approach 3 on the same runs.

Approach 2 fits a power law to the isoFLOP optima (D* ∝ C^gamma); Approach 3 fits a parametric law
and derives the same allocation exponent from the law's own compute model (analysis/laws/allocation.py:
b_opt = α/(α+β) under C ∝ N·D for the Chinchilla and Parcae laws; the recurrence law's local exponent
at fixed N_once, N_rec under C ∝ (N_once + r·N_rec)·D). Both describe one
set of runs, so they should agree within their uncertainty; when they do not, at least one of the two
is leaning on an assumption the data do not support (a parabola's symmetry, the law's functional form,
optima clipped at a grid edge), and the report says so rather than picking one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL
from analysis.isoflop.powerlaw import PowerLawFit

# Without two intervals to compare, exponents further apart than this are called a disagreement.
MAX_GAP_WITHOUT_INTERVALS = 0.1


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    if not all(np.isfinite(a + b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def compare_approaches(approach2: dict[str, PowerLawFit], results) -> tuple[pd.DataFrame, list[str]]:
    """One row per (isoFLOP group, parametric law) with b_opt: both exponents, intervals, verdict.

    approach2: group name -> power law of the tokens optimum D* vs C; results: lawreport.LawResult
    list. Returns the table and a warning per disagreement."""
    rows, warnings = [], []
    for group, power in approach2.items():
        ci2 = power.boot_ci_gamma(level=LEVEL)
        for res in results:
            b = res.params.get("b_opt", np.nan)
            if not np.isfinite(b):
                continue
            ci3 = res.interval("b_opt", LEVEL)
            overlap = _overlap(ci2, ci3)
            gap = abs(power.gamma - b)
            agree = overlap if overlap is not None else gap <= MAX_GAP_WITHOUT_INTERVALS
            rows.append({"isoFLOP group": group, "law": res.name,
                         "Approach 2: gamma_D": power.gamma, "A2 lo": ci2[0], "A2 hi": ci2[1],
                         "Approach 3: b_opt": b, "A3 lo": ci3[0], "A3 hi": ci3[1],
                         "difference": power.gamma - b,
                         "basis": "95 % intervals overlap?" if overlap is not None
                         else f"|difference| <= {MAX_GAP_WITHOUT_INTERVALS}?",
                         "agree": bool(agree)})
            if not agree:
                warnings.append(
                    f"Approach 2 ({group}: D* ∝ C^{power.gamma:.3f}) and Approach 3 (law `{res.name}`: "
                    f"b_opt = {b:.3f}) disagree ({rows[-1]['basis'].rstrip('?')}: no); check the isoFLOP "
                    "flags and the law's residuals before trusting either")
    return pd.DataFrame(rows), warnings
