"""Training stability of a sweep over injection types and learning rates (Parcae Table 2, small scale).

Each run is classified from its logged curves, worst outcome first:
- diverged: the run was stopped (or ended) with a non-finite loss (tag `diverged`), or its final loss is
  not finite;
- exploded: the recurrent state norm grew by more than `explode_factor` over training;
- spiky: the training loss rose above its running minimum by more than `spike_rel` (relative) at least
  once after the first `warmup_fraction` of training;
- converged: none of the above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOSS_KEY = "train/loss"
STATE_KEY = "monitor/state_norm"
RHO_KEY = "monitor/rho_A"
HISTORY_KEYS = (LOSS_KEY, STATE_KEY, RHO_KEY)


@dataclass(frozen=True)
class Thresholds:
    spike_rel: float = 0.3
    explode_factor: float = 10.0
    warmup_fraction: float = 0.2


def count_spikes(loss: np.ndarray, spike_rel: float, skip: int, reference: np.ndarray | None = None) -> int:
    """Separate excursions of the loss above (1 + spike_rel) × its running minimum, after `skip` points.

    `reference` (the median loss of all runs of the sweep at the same steps) removes what the data does:
    every run sees the same batches in the same order, so a hard batch lifts all of them at once. With a
    reference, a point counts only if it is also (1 + spike_rel/2) × above the reference.
    """
    if len(loss) <= skip:
        return 0
    running_min = np.minimum.accumulate(np.where(np.isfinite(loss), loss, np.inf))
    above = (loss > (1 + spike_rel) * running_min) & np.isfinite(loss)
    if reference is not None:
        above &= loss > (1 + spike_rel / 2) * reference
    above[:skip] = False
    # An excursion is a run of consecutive points above the threshold.
    return int(np.sum(above[1:] & ~above[:-1]) + above[0])


def classify(run: pd.Series, hist: pd.DataFrame, th: Thresholds = Thresholds(),
             reference: pd.Series | None = None) -> dict[str, object]:
    """Outcome and its evidence for one run (row of analysis.runs.load_runs, its histories); `reference`
    maps step → median training loss of the sweep (see count_spikes)."""
    losses = hist[hist["key"] == LOSS_KEY]
    loss = losses["value"].to_numpy(dtype=float)
    ref = None if reference is None else reference.reindex(losses["step"]).to_numpy(dtype=float)
    state = hist.loc[hist["key"] == STATE_KEY, "value"].to_numpy(dtype=float)
    spikes = count_spikes(loss, th.spike_rel, int(th.warmup_fraction * len(loss)), ref)
    growth = math.nan
    if len(state) >= 2 and np.isfinite(state[0]) and state[0] > 0:
        growth = float(np.nanmax(np.where(np.isfinite(state), state, np.inf)) / state[0])
    rho = hist.loc[hist["key"] == RHO_KEY, "value"].to_numpy(dtype=float)
    final = float(run["loss"]) if pd.notna(run["loss"]) else math.nan
    if bool(run["diverged"]) or not math.isfinite(final) or (len(loss) and not np.isfinite(loss[-1])):
        outcome = "diverged"
    elif math.isfinite(growth) and growth > th.explode_factor or growth == math.inf:
        outcome = "exploded"
    elif spikes:
        outcome = "spiky"
    else:
        outcome = "converged"
    return {"outcome": outcome, "spikes": spikes, "state_growth": growth,
            "max_state_norm": float(np.nanmax(state)) if len(state) else math.nan,
            "max_rho_A": float(np.nanmax(rho)) if len(rho) else math.nan,
            "steps_logged": int(len(loss)), "final_loss": final}


def stability_table(runs: pd.DataFrame, hist: pd.DataFrame, th: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per run: injection, lr, outcome and evidence."""
    rows = []
    losses = hist[hist["key"] == LOSS_KEY]
    reference = losses.groupby("step")["value"].median() if losses["run_id"].nunique() >= 3 else None
    for _, run in runs.iterrows():
        h = hist[hist["run_id"] == run["run_id"]]
        rows.append({"run_id": run["run_id"], "injection": run["injection"], "lr": run["lr"],
                     "mean_recurrence": run["mean_recurrence"], **classify(run, h, th, reference)})
    return pd.DataFrame(rows).sort_values(["injection", "lr"]).reset_index(drop=True)


SYMBOL = {"converged": "✓", "spiky": "~", "exploded": "↑", "diverged": "✗"}


def outcome_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Injection × learning rate grid of outcome symbols (several seeds: joined with '/')."""
    cells = table.assign(sym=table["outcome"].map(SYMBOL))
    grid = cells.pivot_table(index="injection", columns="lr", values="sym", aggfunc="/".join)
    grid.columns = [f"lr={c:g}" for c in grid.columns]
    return grid.reset_index()


def stability_supported(runs: pd.DataFrame) -> bool:
    return "injection" in runs and runs["injection"].nunique() >= 2
