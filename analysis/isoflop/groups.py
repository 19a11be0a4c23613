"""Approach 2 per group of runs: every allocation axis of one model group (or of all models, for a sweep
over model sizes), computed once for the results object (analysis.results) and drawn by the report."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.isoflop import optima
from analysis.isoflop.approach2 import LABEL, SWEEP_AXES, AxisResult, approach2
from analysis.options import Options
from analysis.runs.labels import with_labels


@dataclass
class IsoflopGroup:
    """One group's isoFLOP analysis: an AxisResult per supported axis, and why the others were skipped."""

    name: str
    axes: tuple[str, ...]                 # the axes asked for
    results: list[AxisResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "<label>: why" per unsupported axis
    flop_check: str | None = None         # realised train FLOPs against the nominal budgets
    mu_of: dict[str, float] = field(default_factory=dict)  # run label -> µ_rec, for the figures' markers

    @property
    def all_skipped(self) -> bool:
        return bool(self.skipped) and len(self.skipped) == len(self.axes)


def flop_check(df: pd.DataFrame) -> str | None:
    """Realised training FLOPs vs nominal budget: the fits use the nominal C."""
    sel = df[np.isfinite(df["flop_budget"].astype(float)) & np.isfinite(df["train_flops"].astype(float))]
    if sel.empty:
        return None
    ratio = sel["train_flops"].astype(float) / sel["flop_budget"].astype(float)
    return (f"Realised train FLOPs / nominal budget: {ratio.min():.3f}–{ratio.max():.3f} "
            "(fits use the nominal budget as C).")


def isoflop_group(name: str, df: pd.DataFrame, opts: Options, axes: tuple[str, ...],
                  rng: np.random.Generator) -> IsoflopGroup:
    """Approach 2 on every supported axis of one group of runs."""
    df = with_labels(df)
    # the figures mark each point's µ_rec; optima name runs by the "run" label (isoflop_optima)
    group = IsoflopGroup(name, tuple(axes), flop_check=flop_check(df),
                         mu_of=dict(zip(df["run"].astype(str), df["mean_recurrence"].astype(float))))
    for axis in axes:
        supported, why = optima.isoflop_supported(df, axis)
        if not supported:
            group.skipped.append(f"{LABEL[axis]}: {why}")
            continue
        group.results.append(approach2(df, name, axis, opts, rng, looped="mean_recurrence" in axes))
    return group


def sweep_groups(usable: pd.DataFrame, opts: Options) -> list[IsoflopGroup]:
    """Per model (µ_rec and D at fixed model), and across models when only the size varies at one µ_rec
    (a Chinchilla-style size sweep: N*)."""
    rng = np.random.default_rng(opts.seed)
    groups = [isoflop_group(" / ".join(str(n) for n in name), grp, opts, SWEEP_AXES, rng)
              for name, grp in usable.groupby(["model_kind", "model_name"], sort=True, dropna=False)]
    if usable["mean_recurrence"].nunique() <= 1 and optima.isoflop_supported(usable, "params")[0]:
        groups.append(isoflop_group("all models", usable, opts, ("params",), rng))
    return groups
