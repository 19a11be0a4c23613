"""The "Held-out budgets" section: every approach fitted without the largest budget(s), its predicted
compute-optimal loss and allocation against what those budgets measured, next to the paper's errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.holdout import MIN_BUDGETS_FOR_HOLDOUT, PAPER_ERRORS_PCT, PAPER_SOURCE, Holdout
from analysis.isoflop.approach2 import LABEL, XLABEL
from analysis.report import figures
from analysis.report.markdown import figure_link, table


def paper_errors() -> str:
    return " % and ".join(f"{e:g}" for e in PAPER_ERRORS_PCT) + f" % ({PAPER_SOURCE})"


def holdout_section(h: Holdout, out_dir: Path) -> str:
    head = "## Held-out budgets: predictions checked\n\n"
    if h.reason:
        return (head + f"Not checked: {h.reason}. With >= {MIN_BUDGETS_FOR_HOLDOUT} FLOP budgets, "
                       "`--holdout K` fits every approach without the K largest and predicts them.")
    pred, obs = f"predicted {LABEL[h.axis]}", f"observed {LABEL[h.axis]}"
    t = pd.DataFrame(h.rows).rename(columns={"predicted_optimum": pred, "observed_optimum": obs})
    cols = ["C", "approach", "predicted_loss", "observed_loss", "error_pct", pred, obs]
    png = figures.plot_holdout(h.rows, XLABEL[h.axis], out_dir / "figures" / "holdout",
                               max(PAPER_ERRORS_PCT))
    text = (head + f"Every approach is fitted on the budgets below C = {min(h.budgets):.3g} and predicts the "
            f"compute-optimal loss and {XLABEL[h.axis]} of the held-out budget(s) "
            + ", ".join(f"{c:.3g}" for c in h.budgets)
            + ". Observed: the minimum of the Akima spline through the held-out budget's points. Approach 2: "
            "the power law of the optima, and L*(C) = E + k·C^−g through the optimum losses; Approach 3: "
            "each law refitted on the training runs, minimised along the held-out budget's measured isoFLOP "
            "curve. error_pct = 100·(predicted − observed)/observed.\n\n"
            + table(t, cols) + "\n\n"
            + f"Mean absolute held-out loss error: **{h.mean_abs_error_pct:.2f} %**; the paper reports "
            + paper_errors() + ".\n\n"
            + "".join(f"Note: {n}.\n\n" for n in h.notes)
            + figure_link(png, out_dir, "held-out budgets: predicted vs observed"))
    return text
