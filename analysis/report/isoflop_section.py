"""The isoFLOP section of a report: per model group and allocation axis, the figure, the per-budget
optima with their QC flags, the power law and its bias note; drawn from computed results
(analysis.isoflop.groups), nothing fitted here."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.isoflop import optima, qc
from analysis.isoflop.approach2 import LABEL, XLABEL, AxisResult
from analysis.isoflop.estimator_choice import NAMES
from analysis.isoflop.groups import IsoflopGroup
from analysis.options import Options
from analysis.report import figures
from analysis.report.document import slug
from analysis.report.markdown import figure_link, fmt, interval, table



def _powerlaw_rows(r: AxisResult) -> list[dict[str, object]]:
    rows = []
    seeded = any("seeds" in law.boot for law in (r.law, r.alternative) if law is not None)
    for law in (r.law, r.alternative):
        if law is None:
            continue
        name = NAMES[law.estimator] + (" — the headline" if law is r.law else "")
        rows.append({
            "quantity": f"{LABEL[r.axis]} ∝ C^gamma", "optima": name,
            "gamma": fmt(law.gamma),
            "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs")),
            **({"95 % bootstrap (seeds)": interval(*law.boot_ci_gamma("seeds"))} if seeded else {}),
            "95 % t-interval (OLS)": interval(*law.ci_gamma),
            "k": fmt(law.k), "R²": fmt(law.r2), "budgets used": len(law.C),
            "paper gamma": fmt(r.paper),
        })
    return rows


def _optima_section(r: AxisResult) -> str:
    t = optima.optima_table(r.optima)
    t["95 % (run bootstrap)"] = [interval(a, b) for a, b in zip(t["opt_lo"], t["opt_hi"])]
    t["parabola 95 %"] = [interval(a, b) for a, b in zip(t["parabola_lo"], t["parabola_hi"])]
    t["95 % (seed bootstrap)"] = [interval(a, b) for a, b in zip(t["seed_lo"], t["seed_hi"])]
    t["power law"] = ["used" if r.law is not None and b in set(r.law.C.tolist()) else "excluded"
                      for b in t["budget"]]
    seeded = bool((t["seeds"] > 1).any())  # replicates: seeds per point and the seed bootstrap beside the runs'
    cols = ["budget", "n_runs", *(["seeds"] if seeded else []), "optimum", "95 % (run bootstrap)",
            *(["95 % (seed bootstrap)"] if seeded else []), "parabola_optimum", "parabola 95 %",
            "loss_at_opt", "curvature_t", "dof", "power law", "flags"]
    text = f"Per-budget optimum of {LABEL[r.axis]} (shape-free estimate, parabola beside it):\n\n" + table(t, cols)
    points = r.points_excluded()
    if points:
        pt = pd.DataFrame(points)
        text += (f"\n\nPoints left out of the fits ({len(points)}):\n\n"
                 + table(pt, ["C", r.axis, "loss", "run", "reason"]))
    notes = sorted({n for o in r.optima for n in o.notes})
    if notes:
        text += "\n\n" + "\n".join(f"Note: {n}." for n in notes)
    return text


def _axis_block(r: AxisResult, name: str, out_dir: Path, mu_of: dict[str, float] | None = None) -> list[str]:
    label, xlabel = LABEL[r.axis], XLABEL[r.axis]
    stem = out_dir / "figures" / f"isoflop_{slug(name)}_{r.axis}"
    blocks = [f"#### {label}", figure_link(figures.plot_isoflop(r.optima, xlabel, stem, mu_of), out_dir,
                                            f"isoFLOP {name}: loss vs {xlabel}"),
              _optima_section(r)]
    if r.law is None:
        blocks.append(f"**No power law for {label}**: {r.reason}.")
        return blocks
    blocks.append("Compute-optimal power law (ln y = ln k + gamma ln C):\n\n" + table(pd.DataFrame(_powerlaw_rows(r))))
    if r.choice is not None:
        blocks.append(f"**Headline estimator**: {r.choice.reason()}.")
    blocks += [f"**Bias note**: {n}." for n in r.notes]
    pstem = out_dir / "figures" / f"powerlaw_{slug(name)}_{r.axis}"
    blocks.append(figure_link(figures.plot_powerlaw(r.law, r.optima, label, pstem), out_dir,
                              f"power law {name}: {label} vs C"))
    return blocks


def group_section(g: IsoflopGroup, out_dir: Path) -> str:
    """Approach 2 on every supported axis of one group of runs (analysis.isoflop.groups)."""
    if g.all_skipped:
        return f"### `{g.name}`\n\nIsoFLOP analysis skipped: " + "; ".join(g.skipped) + "."
    blocks = [f"### `{g.name}`"] + ([g.flop_check] if g.flop_check else [])
    for r in g.results:
        blocks += _axis_block(r, g.name, out_dir, g.mu_of)
    blocks += [f"Not analysed: {s}." for s in g.skipped]
    if g.results:  # the Chinchilla-style figure of this model: isoFLOP curves beside optimum vs compute
        png = figures.plot_isoflop_summary([(r.optima, r.law, XLABEL[r.axis], LABEL[r.axis]) for r in g.results],
                                           f"{g.name}: isoFLOP curves and compute-optimal power laws",
                                           out_dir / "figures" / f"chinchilla_{slug(g.name)}", g.mu_of)
        blocks.insert(1, figure_link(png, out_dir, f"{g.name}: isoFLOP curves and compute-optimal laws"))
    return "\n\n".join(blocks)


def isoflop_intro(opts: Options) -> str:
    return (
        "## IsoFLOP analysis\n\n"
        "Per FLOP budget, two estimates of the optimum: the minimum of an Akima spline through the "
        "points (no shape assumed; replicate runs at one size averaged) and the vertex of a least-squares "
        "parabola in ln(size) (smooths noise, but biased when the curve is asymmetric or the grid "
        f"off-centre), each with a 95 % **run-bootstrap** interval ({opts.n_boot} resamples of the budget's "
        "runs, optimum recomputed). The **headline** power law uses the estimator with the lower error "
        "of the exponent in a simulation of this grid (its sizes, a smooth curve through its points, its "
        "noise; docs/analysis.md); the other sits beside it, with a bias note when it leaves the "
        "headline's interval. Quality control (named flags, defined in docs/analysis.md): per point "
        f"`{qc.EXACT_DUPLICATE}`, `{qc.NEAR_DUPLICATE}` (< {opts.qc.near_duplicate_steps:g} of the median grid "
        f"step), `{qc.OUTLIER}` (> {opts.qc.outlier_k:g} residual SDs from a robust smooth fit, with >= "
        f"{opts.qc.min_sizes_for_outliers} sizes); per budget `{qc.TOO_FEW}`, `{qc.EDGE_LOW}`/`{qc.EDGE_HIGH}`, `{qc.OFF_CENTRE}` (< "
        f"{opts.qc.min_side} sizes on one side of the optimum), `{qc.WEAK_CURVATURE}` (parabola curvature t "
        "below the t distribution's 97.5 % quantile for its dof), "
        f"`{qc.SINGLE_POINT}` (leaving one size out moves the minimum to the edge or fails the curvature "
        "test; " + ("excludes" if opts.qc.exclude_single_point else "a warning only: leaving such budgets out "
                    "was measured not to help the exponent") + f"), `{qc.DISAGREE}` (parabola and spline optima > {opts.qc.disagree_steps:g} grid steps apart; "
        + ("excludes" if opts.qc.exclude_disagreement else "a warning only: the parabola is biased, so "
           "disagreeing with it is no measured reason to drop a budget") + "). Thresholds: `--qc KEY=VALUE`. "
        + ("Flagged points and budgets are **kept** (--keep-flagged) and marked. " if opts.keep_flagged else
           "Flagged points and budgets are **left out** of the power law (--keep-flagged keeps them). ")
        + f"A power law needs >= {opts.min_budgets} clean budgets (--min-budgets); with fewer there is "
        "none, never a fit through flagged optima. Power-law intervals: the run bootstrap propagated "
        "through every budget's optimum, and the OLS t-interval (scatter of the optima about the line). "
        "The paper's exponents are shown for comparison only.")


def conventions_section(entry: dict) -> str:
    """The compute-convention sensitivity table of a sweep (analysis.isoflop.conventions)."""
    return ("## Compute conventions\n\n"
            f"The isoFLOP exponents of `{entry['group']}` under each way of counting compute (columns) and "
            "parameters (rows): each budget's optimum is re-read on the parameter count, and under executed "
            "FLOPs each budget is valued at what its compute-optimal run executes (the budget times the "
            "executed/reference FLOP ratio at the optimum); exponents with their 95 % run-bootstrap "
            "interval (analysis/isoflop/conventions.py). "
            f"**Default: {entry['why']}.** A count the runs did not log says \"not logged\" "
            "(executed FLOPs and embedding counts are logged by newer runs only).\n\n"
            + table(pd.DataFrame(entry["table"])))
