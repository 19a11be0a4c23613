"""Approach 2 per group of runs: every allocation axis of one model group (or of all models, for a sweep
over model sizes), computed once for the results object (analysis.results) and drawn by the report."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.isoflop import optima, qc
from analysis.isoflop.approach2 import LABEL, SWEEP_AXES, AxisResult, approach2
from analysis.isoflop.qc import QCConfig, Screen, screen
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
    qc: Screen | None = None              # the QC stage's decision for every run of the group
    frame: pd.DataFrame | None = None     # the group's runs, with qc_reason / qc_detail / used

    @property
    def all_skipped(self) -> bool:
        return bool(self.skipped) and len(self.skipped) == len(self.axes)


def flop_check(df: pd.DataFrame) -> str | None:
    """Realised training FLOPs vs nominal budget: the fits use the nominal C."""
    if "train_flops" not in df:
        return None
    sel = df[np.isfinite(df["flop_budget"].astype(float)) & np.isfinite(df["train_flops"].astype(float))]
    if sel.empty:
        return None
    ratio = sel["train_flops"].astype(float) / sel["flop_budget"].astype(float)
    return (f"Realised train FLOPs / nominal budget: {ratio.min():.3f}–{ratio.max():.3f} "
            "(fits use the nominal budget as C).")


def screen_axis(df: pd.DataFrame, axes: tuple[str, ...]) -> str:
    """The axis the QC stage screens a group's profiles along: the first of ``axes`` that varies within a
    budget (model size for a size sweep, µ_rec for a looped sweep; tokens mirror either)."""
    for axis in axes:
        column = optima.AXIS_COLUMN[axis]
        if column in df and df.groupby("flop_budget")[column].nunique().max() >= 2:
            return axis
    return axes[0]


def screened(df: pd.DataFrame, axes: tuple[str, ...], cfg: QCConfig) -> tuple[pd.DataFrame, Screen]:
    """The group's runs with the QC stage's decision per row (qc_reason, qc_detail, used)."""
    axis = screen_axis(df, axes)
    s = screen(df, optima.AXIS_COLUMN[axis], cfg, bound_at_one=axis == "mean_recurrence")
    return df.assign(qc_reason=s.reason.astype(str), qc_stage=s.stage, qc_detail=s.detail, used=s.used), s


def isoflop_group(name: str, df: pd.DataFrame, opts: Options, axes: tuple[str, ...],
                  rng: np.random.Generator) -> IsoflopGroup:
    """The QC stage once over the group's runs, then Approach 2 on every supported axis of the used ones."""
    df = with_labels(df)
    frame, s = screened(df, axes, opts.qc)
    used = frame[frame["used"]] if not opts.keep_flagged else frame
    dropped = frame[~frame["used"]]
    # the figures mark each point's µ_rec; optima name runs by the "run" label (isoflop_optima)
    group = IsoflopGroup(name, tuple(axes), flop_check=flop_check(df),
                         mu_of=dict(zip(df["run"].astype(str), df["mean_recurrence"].astype(float))),
                         qc=s, frame=frame)
    for axis in axes:
        # an axis the runs support is analysed even when QC empties it: its budgets and their dropped runs
        # are shown, and its line says why there is no law
        supported, why = optima.isoflop_supported(frame, axis)
        if not supported:
            counts = s.counts()
            group.skipped.append(f"{LABEL[axis]}: {why}" + (" after QC (" + ", ".join(
                f"{v} {k}" for k, v in counts.items()) + ")" if counts else ""))
            continue
        group.results.append(approach2(used, name, axis, opts, rng, looped="mean_recurrence" in axes,
                                       dropped=dropped))
    return group


def sweep_groups(usable: pd.DataFrame, opts: Options) -> list[IsoflopGroup]:
    """Per model (µ_rec and D at fixed model), and across models when only the size varies at one µ_rec
    (a Chinchilla-style size sweep: N*)."""
    rng = np.random.default_rng(opts.seed)
    # every run belongs to one group, so the QC stage decides once per run
    if usable["mean_recurrence"].nunique() <= 1 and optima.isoflop_supported(usable, "params")[0]:
        return [isoflop_group("all models", usable, opts, ("params",), rng)]
    return [isoflop_group(" / ".join(str(n) for n in name), grp, opts, SWEEP_AXES, rng)
            for name, grp in usable.groupby(["model_kind", "model_name"], sort=True, dropna=False)]


def decisions(groups: list[IsoflopGroup]) -> pd.DataFrame:
    """Every screened run of the groups with the QC stage's columns (qc_reason, qc_stage, qc_detail, used);
    each run lies in one group, so its index is the runs'."""
    frames = [g.frame for g in groups if g.frame is not None]
    return pd.concat(frames) if frames else pd.DataFrame(columns=["qc_reason", "qc_stage", "qc_detail", "used"])


def used_runs(groups: list[IsoflopGroup], runs: pd.DataFrame, keep_flagged: bool = False) -> pd.DataFrame:
    """The runs every later fit reads (Approach 3, held-out, predictions, conventions): the QC stage's
    decisions applied once. Runs dropped for a reason of their own (qc.RUN_REASONS: duplicates, outliers)
    are gone; the others carry ``qc.PROFILE_USED``, whether they enter an isoFLOP profile, which
    Approach 2 reads (a run of a budget with too few sizes is still a valid run for a parametric law).
    Runs outside every group (no FLOP budget) are kept. --keep-flagged keeps every run everywhere."""
    decided = decisions(groups)
    reason = decided["qc_reason"].reindex(runs.index)
    profile = decided["used"].reindex(runs.index).fillna(True).astype(bool)
    if keep_flagged:
        return runs.assign(**{qc.PROFILE_USED: True})
    bad = reason.isin({str(r) for r in qc.RUN_REASONS}).to_numpy()
    return runs.assign(**{qc.PROFILE_USED: profile.to_numpy()})[~bad]
