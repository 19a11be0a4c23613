"""Seeds as replicates (issue 24): a sweep with ``sweep.seeds=K`` trains every grid point K times, as K
runs that differ only in ``train.seed`` (and share the tag ``replicate_of``). Per budget of a group's main
isoFLOP axis this module states

* the seed noise: the SD of the loss across the seeds of each grid point, pooled over the budget's points
  (sqrt of Σ (k_i − 1)·s_i² / Σ (k_i − 1));
* whether the optimum is distinguishable from its grid neighbours: the best grid point (lowest mean loss)
  against each neighbour on the grid, by the paired difference over seeds (same seed value at both
  points: common random numbers) with its 95 % t-interval; unpaired (Welch) when the seeds do not pair;
  "not distinguishable" when the interval includes 0, "cannot be judged" with one seed per point.

The spline and the parabola average the seeds of a grid point (analysis.isoflop.optima), and the seed
bootstrap interval (each point's seeds resampled, the grid kept) sits beside the run bootstrap there.
Branched runs (cooldowns cut from a trunk, tags ``branch.trunk`` / ``branch.from_tokens``) are listed by
``branch_table``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimation import LEVEL, t_critical
from analysis.isoflop.approach2 import LABEL
from analysis.isoflop.groups import IsoflopGroup
from analysis.isoflop.optima import AXIS_COLUMN, BudgetOptimum, budget_runs

DISTINGUISHABLE = "distinguishable"
NOT_DISTINGUISHABLE = "not distinguishable"
NOT_JUDGED = "cannot be judged"
ONE_SEED = "one seed per point"


@dataclass
class Comparison:
    """The best grid point against one grid neighbour: diff = mean loss(neighbour) − loss(best)."""

    neighbour: float
    diff: float
    lo: float
    hi: float
    n: int          # seed pairs (paired) or the smaller replicate count (Welch)
    method: str     # "paired over n seeds", "Welch (seeds do not pair)", or why not judged
    verdict: str

    def entry(self) -> dict:
        return {"neighbour": self.neighbour, "diff": self.diff, "interval": [self.lo, self.hi], "n": self.n,
                "method": self.method, "verdict": self.verdict}


@dataclass
class BudgetSeeds:
    budget: float
    n_points: int
    seeds_min: int
    seeds_max: int
    sd: float           # pooled SD of the loss across seeds (NaN without replicates)
    dof: int
    mean_loss: float
    best: float         # the best grid point's size
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def sd_rel(self) -> float:
        return self.sd / self.mean_loss

    @property
    def verdict(self) -> str:
        if not self.comparisons or all(c.verdict == NOT_JUDGED for c in self.comparisons):
            return NOT_JUDGED
        return NOT_DISTINGUISHABLE if any(c.verdict != DISTINGUISHABLE for c in self.comparisons) else DISTINGUISHABLE

    def entry(self) -> dict:
        return {"C": self.budget, "n_points": self.n_points, "seeds_per_point": [self.seeds_min, self.seeds_max],
                "sd": self.sd, "sd_rel": self.sd_rel, "dof": self.dof, "best": self.best,
                "verdict": self.verdict, "comparisons": [c.entry() for c in self.comparisons]}


@dataclass
class SeedSummary:
    """One group's seed analysis on its main axis (the first analysed)."""

    group: str
    axis: str
    budgets: list[BudgetSeeds] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def replicated(self) -> bool:
        return any(b.seeds_max >= 2 for b in self.budgets)

    def entry(self) -> dict:
        return {"group": self.group, "axis": self.axis, "replicated": self.replicated,
                "headline_interval": "noise draws", "budgets": [b.entry() for b in self.budgets]}


def pooled_sd(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """(pooled SD across replicates at each x, its dof); (NaN, 0) without replicates."""
    ss, dof = 0.0, 0
    for v in np.unique(x):
        r = y[x == v]
        ss += float(np.sum((r - r.mean()) ** 2))
        dof += r.size - 1
    return (float(np.sqrt(ss / dof)), dof) if dof else (float("nan"), 0)


def _by_seed(y: np.ndarray, seeds: np.ndarray) -> dict[float, float]:
    """Seed -> loss at one point (a seed logged twice at one point: its mean); runs without a seed left out."""
    out: dict[float, list[float]] = {}
    for value, seed in zip(y, seeds):
        if np.isfinite(seed):
            out.setdefault(float(seed), []).append(float(value))
    return {s: float(np.mean(v)) for s, v in out.items()}


def compare(best: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray], neighbour: float,
            level: float = LEVEL) -> Comparison:
    """The neighbour's loss minus the best point's: paired over common seeds when >= 2 pair, else Welch
    with >= 2 replicates on both sides, else not judged. best, other: (losses, seeds) of the two points."""
    (ya, sa), (yb, sb) = best, other
    a, b = _by_seed(ya, sa), _by_seed(yb, sb)
    common = sorted(set(a) & set(b))
    nan = float("nan")
    if len(common) >= 2:
        d = np.array([b[s] - a[s] for s in common])
        half = t_critical(d.size - 1, level) * float(d.std(ddof=1)) / np.sqrt(d.size)
        lo, hi, n, method = d.mean() - half, d.mean() + half, d.size, f"paired over {d.size} seeds"
        diff = float(d.mean())
    elif ya.size >= 2 and yb.size >= 2:
        va, vb = ya.var(ddof=1) / ya.size, yb.var(ddof=1) / yb.size
        se = float(np.sqrt(va + vb))
        dof = (va + vb) ** 2 / (va**2 / (ya.size - 1) + vb**2 / (yb.size - 1)) if se > 0 else ya.size + yb.size - 2
        diff = float(yb.mean() - ya.mean())
        half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
        lo, hi, n, method = diff - half, diff + half, min(ya.size, yb.size), "Welch (seeds do not pair)"
    else:
        return Comparison(neighbour, float(yb.mean() - ya.mean()), nan, nan, min(ya.size, yb.size),
                          ONE_SEED, NOT_JUDGED)
    verdict = DISTINGUISHABLE if (lo > 0 or hi < 0) else NOT_DISTINGUISHABLE
    return Comparison(neighbour, diff, float(lo), float(hi), int(n), method, verdict)


@dataclass
class _GridPoints:
    """The part of a BudgetOptimum that ``budget_seeds`` reads: one budget's runs along one axis."""

    budget: float
    x: np.ndarray       # ln of the axis value
    y: np.ndarray       # loss
    seeds: np.ndarray   # training seed (NaN: not logged)


def budget_seeds(o: BudgetOptimum | _GridPoints) -> BudgetSeeds:
    """Seed noise and the optimum against its grid neighbours, on one budget's kept runs."""
    x, y = o.x, o.y
    seeds = o.seeds if o.seeds.size == x.size else np.full(x.size, np.nan)
    ux, counts = np.unique(x, return_counts=True)
    sd, dof = pooled_sd(x, y)
    means = np.array([y[x == v].mean() for v in ux])
    best = int(np.argmin(means))
    out = BudgetSeeds(o.budget, int(ux.size), int(counts.min()), int(counts.max()), sd, dof,
                      float(y.mean()), float(np.exp(ux[best])))
    for j in (best - 1, best + 1):
        if 0 <= j < ux.size:
            out.comparisons.append(compare((y[x == ux[best]], seeds[x == ux[best]]),
                                           (y[x == ux[j]], seeds[x == ux[j]]), float(np.exp(ux[j]))))
    return out


def seed_summaries(groups: list[IsoflopGroup]) -> list[SeedSummary]:
    """Per group, the seed analysis of its main (first analysed) axis."""
    out = []
    for g in groups:
        if not g.results:
            continue
        r = g.results[0]
        s = SeedSummary(g.name, r.axis,
                        [budget_seeds(o) for o in r.optima if o.x.size])
        label = LABEL[r.axis]
        for b in s.budgets:
            if b.seeds_max >= 2 and b.seeds_min < b.seeds_max:
                s.warnings.append(f"{s.group}: {label} at C={b.budget:.3g}: grid points have {b.seeds_min} to "
                                  f"{b.seeds_max} seeds (a run failed or is missing?): the means weigh them unequally")
        out.append(s)
    return out


def seed_summaries_from_runs(usable: pd.DataFrame, axis: str = "mean_recurrence") -> list[SeedSummary]:
    """The seed analysis straight from the runs, for a sweep whose isoFLOP analysis was skipped (fewer than
    3 values of the axis per budget: no optimum to fit). With two µ_rec values and K seeds the question a
    sweep asks, which value is lower and by more than the noise, is still answered: per budget, the seed
    noise and the best grid point against its neighbours, paired over seeds. Empty when no budget has two
    values of the axis (or the columns are missing)."""
    column = AXIS_COLUMN.get(axis, axis)
    if not {"flop_budget", column, "loss"} <= set(usable.columns):
        return []
    budgets = []
    for budget, grp, seeds in budget_runs(usable, axis):
        y = grp["loss"].to_numpy(dtype=float)
        ok = np.isfinite(y)
        v = grp[column].to_numpy(dtype=float)[ok]
        if np.unique(v).size < 2:
            continue
        seeds = np.full(ok.size, np.nan) if seeds is None else seeds
        budgets.append(budget_seeds(_GridPoints(budget, np.log(v), y[ok], seeds[ok])))
    return [SeedSummary("all runs (isoFLOP analysis skipped)", axis, budgets)] if budgets else []


BRANCH_COLUMNS = ["run", "branch_trunk", "trunk directory", "branch_from_tokens", "tokens", "mean_recurrence",
                  "flop_budget", "status"]


def branch_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Branched runs (tag branch.trunk) with their trunk: its hash and its directory under the sweep's
    paths.root (a trunk is not an MLflow run: it lives in runs/trunk-<hash>/, with its metrics.jsonl and
    the checkpoints it keeps; docs/branching.md), the token count the branch was cut at and its own;
    empty when no run is branched. runs: the sweep's runs with a ``run`` label column."""
    if "branch_trunk" not in runs or not runs["branch_trunk"].notna().any():
        return pd.DataFrame(columns=BRANCH_COLUMNS)
    br = runs[runs["branch_trunk"].notna()].copy()
    br["trunk directory"] = [f"runs/trunk-{h}/" for h in br["branch_trunk"]]
    for col in BRANCH_COLUMNS:
        if col not in br:
            br[col] = np.nan
    return br.sort_values(["branch_trunk", "branch_from_tokens"], kind="stable")[BRANCH_COLUMNS].reset_index(drop=True)
