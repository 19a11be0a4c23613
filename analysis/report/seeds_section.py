"""The "Seeds as replicates" section (analysis.isoflop.seeds: seed noise per budget, the optimum against
its grid neighbours over seeds), its headline line, and the list of branched runs and their trunks."""
from __future__ import annotations

import pandas as pd

from analysis.isoflop.seeds import DISTINGUISHABLE, NOT_JUDGED, BudgetSeeds, SeedSummary
from analysis.report.markdown import fmt, table

SYMBOL = {"mean_recurrence": "µ_rec", "params": "N", "tokens": "D"}
HOW = ("a grid point's seeds are the runs that differ only in `train.seed` (`sweep.seeds=K`; a table names "
       "its seed column with `--train-seed`)")


def _value(axis: str, v: float) -> str:
    return f"{SYMBOL.get(axis, axis)} = {fmt(v, 3)}"


def _comparison_text(axis: str, b: BudgetSeeds) -> str:
    parts = []
    for c in b.comparisons:
        if c.verdict == NOT_JUDGED:
            parts.append(f"{fmt(c.neighbour, 3)}: not judged ({c.method})")
        else:
            parts.append(f"{fmt(c.neighbour, 3)}: {c.diff:+.4g} [{c.lo:.4g}, {c.hi:.4g}], {c.verdict} ({c.method})")
    return "; ".join(parts) or "no grid neighbour"


def seeds_section(summaries: list[SeedSummary]) -> str:
    head = "## Seeds as replicates\n\n"
    if not any(s.replicated for s in summaries):
        return (head + "One seed per grid point: the seed noise cannot be measured, and whether an optimum is "
                "distinguishable from its grid neighbours cannot be judged; " + HOW + ".")
    blocks = [head + (
        "The seeds of a grid point are averaged by both per-budget estimators (spline and parabola). Per "
        "budget of each group's main axis: the **seed noise**, the SD of the loss across the seeds of each "
        "grid point pooled over the budget's points, and whether the **optimum** (the grid point with the "
        "lowest mean loss) is **distinguishable from its grid neighbours**: the neighbour's loss minus the "
        "optimum's, paired over the seeds both points ran (Welch's unpaired interval when the seeds do not "
        "pair), with its 95 % t-interval; not distinguishable when it includes 0. The headline intervals of "
        "the optima and exponents are the **noise draws** (analysis/isoflop/noise.py), whose per-run noise "
        "SD pools the seeds' spread about each grid point's mean with the smooth curve's residuals; " + HOW + ".")]
    for s in summaries:
        rows = [{"C": b.budget, "grid points": b.n_points,
                 "seeds per point": str(b.seeds_max) if b.seeds_min == b.seeds_max else f"{b.seeds_min}–{b.seeds_max}",
                 "seed SD": b.sd, "seed SD (%)": 100 * b.sd_rel, "dof": b.dof,
                 f"optimum {SYMBOL.get(s.axis, s.axis)}": b.best,
                 "neighbour: loss difference [95 %]": _comparison_text(s.axis, b), "verdict": b.verdict}
                for b in s.budgets]
        blocks.append(f"### `{s.group}` ({SYMBOL.get(s.axis, s.axis)} grid)\n\n" + table(pd.DataFrame(rows)))
    return "\n\n".join(blocks)


def seeds_line(s: SeedSummary, show_group: bool) -> str:
    """The headline's line: per budget, the optimum against its grid neighbours over seeds."""
    where = f" [{s.group}]" if show_group else ""
    if not s.replicated:
        return (f"optimum vs its grid neighbours{where}: cannot be judged — one seed per grid point "
                "(sweep.seeds=K >= 2 trains every point K times)")
    parts = []
    for b in s.budgets:
        name = f"C = {b.budget:.3g} (seed SD {100 * b.sd_rel:.2g} %)" if b.sd == b.sd else f"C = {b.budget:.3g}"
        judged = [c for c in b.comparisons if c.verdict != NOT_JUDGED]
        if not judged:
            parts.append(f"{name}: {_value(s.axis, b.best)}, cannot be judged (one seed)")
            continue
        beaten = [c for c in judged if c.verdict == DISTINGUISHABLE]
        close = [c for c in judged if c.verdict != DISTINGUISHABLE]
        text = f"{name}: {_value(s.axis, b.best)}"
        if close:
            text += " not distinguishable from " + " and ".join(
                f"{fmt(c.neighbour, 3)} ({c.diff:+.3g} [{c.lo:.3g}, {c.hi:.3g}])" for c in close)
        if beaten:
            text += (" but" if close else "") + " distinguishable from " + " and ".join(
                f"{fmt(c.neighbour, 3)} ({c.diff:+.3g} [{c.lo:.3g}, {c.hi:.3g}])" for c in beaten)
        parts.append(text)
    return (f"optimum vs its grid neighbours{where} (loss difference, paired over seeds, 95 % t-interval): "
            + "; ".join(parts))


def branches_section(branches: pd.DataFrame) -> str | None:
    """Branched points (cooldowns cut from a trunk) and their trunks; None when no run is branched."""
    if branches is None or branches.empty:
        return None
    t = branches.rename(columns={"branch_trunk": "trunk (hash)", "branch_from_tokens": "branched at (tokens)",
                                 "tokens": "tokens (total)", "mean_recurrence": "µ_rec", "flop_budget": "C"})
    return ("## Branched runs\n\nRuns cut from a trunk's checkpoint and cooled down (`branch.trunk`, "
            f"`branch.from_tokens`): {len(t)} branch(es) of {t['trunk (hash)'].nunique()} trunk(s). They share "
            "the trunk's training up to the branch point, so their losses are not independent. A trunk is not an "
            "MLflow run: its curve is in the trunk directory's metrics.jsonl, under the sweep's paths.root.\n\n"
            + table(t))


def summary_entry(summaries: list[SeedSummary]) -> list[dict]:
    return [s.entry() for s in summaries]

