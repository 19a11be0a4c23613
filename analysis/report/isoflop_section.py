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
    for law in (r.law, r.alternative):
        if law is None:
            continue
        name = NAMES[law.estimator] + (" — the headline" if law is r.law else "")
        rows.append({
            "quantity": f"{LABEL[r.axis]} ∝ C^gamma", "optima": name,
            "gamma": fmt(law.gamma),
            "95 % interval (noise draws)": interval(*law.boot_ci_gamma()),
            "95 % t-interval (OLS)": interval(*law.ci_gamma),
            "k": fmt(law.k), "R²": fmt(law.r2), "budgets used": len(law.C),
            "paper gamma": fmt(r.paper),
        })
    return rows


def _optima_section(r: AxisResult) -> str:
    t = optima.optima_table(r.optima)
    t["95 %"] = [interval(a, b) for a, b in zip(t["opt_lo"], t["opt_hi"])]
    t["power law"] = ["used" if r.law is not None and b in set(r.law.C.tolist()) else "excluded"
                      for b in t["budget"]]
    seeded = bool((t["seeds"] > 1).any())
    cols = ["budget", "n_runs", *(["seeds"] if seeded else []), "estimator", "optimum", "95 %",
            "parabola_optimum", "akima_optimum", "loss_at_opt", "curvature_t", "dof", "power law", "flags"]
    text = (f"Per-budget optimum of {LABEL[r.axis]} (the chosen estimator; both estimators beside it; 95 % "
            "from the noise draws):\n\n" + table(t, cols))
    points = r.points_excluded()
    if points:
        pt = pd.DataFrame(points)
        text += (f"\n\nRuns the QC stage left out at these budgets ({len(points)}):\n\n"
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
    c = opts.qc
    return (
        "## IsoFLOP analysis\n\n"
        "**Quality control, one stage** (analysis/isoflop/qc.py, docs/analysis.md), run once per group along "
        "its size axis, read by every fit (Approach 2 on every axis, Approach 3, the held-out check, "
        "predictions); in order: "
        f"`{qc.EXACT_DUPLICATE}` / `{qc.NEAR_DUPLICATE}` (sizes within {100 * c.near_duplicate_rel:g} %: the run "
        "nearest the nominal compute is kept), "
        f"`{qc.TOO_FEW}` (< {c.min_points} sizes), `{qc.OFF_CENTER}` (sizes beyond {c.off_center_k:g}× the "
        f"vertex's distance to the nearer grid end are trimmed; a vertex beyond the grid: `{qc.EDGE_LOW}` / "
        f"`{qc.EDGE_HIGH}`), `{qc.OUTLIER}` (leave-one-out spline residual beyond a robust z of "
        f"{c.outlier_z:g}, pooled over budgets), `{qc.WEAK_CURVATURE}` (the parabola's curvature not significant "
        "at 97.5 %), and too few sizes again. Thresholds: `--qc KEY=VALUE`; points.csv gives every row's "
        "decision. "
        + ("The dropped runs are **kept** in the fits (--keep-flagged) and marked. " if opts.keep_flagged else "")
        + "Per budget, two estimators of the optimum: the parabola vertex in ln(size) and the minimum of an "
        "Akima spline; the **headline** uses the one with the lower error of ln y* at the end budgets when "
        "noisy copies of this grid are simulated under Chinchilla-form truths with α = β and α ≠ β "
        "(docs/analysis.md); an optimum at the edge of the kept grid is never an estimate. "
        f"Intervals: {opts.n_boot} draws that redraw every run's loss at its grid point from the measured "
        "per-run noise (its SD with χ² uncertainty), with the budgets resampled when their optima scatter "
        f"about the line more than that noise explains. A power law needs >= {opts.min_budgets} clean "
        "budgets (--min-budgets). The paper's exponents are shown for comparison only.")


def conventions_section(entry: dict) -> str:
    """The compute-convention sensitivity table of a sweep (analysis.isoflop.conventions)."""
    return ("## Compute conventions\n\n"
            f"The isoFLOP exponents of `{entry['group']}` under each way of counting compute (columns) and "
            "parameters (rows): each budget's optimum is re-read on the parameter count, and under executed "
            "FLOPs each budget is valued at what its compute-optimal run executes (the budget times the "
            "executed/reference FLOP ratio at the optimum); exponents with their 95 % "
            "interval (analysis/isoflop/conventions.py). "
            f"**Default: {entry['why']}.** A count the runs did not log says \"not logged\" "
            "(executed FLOPs and embedding counts are logged by newer runs only).\n\n"
            + table(pd.DataFrame(entry["table"])))
