"""The isoFLOP section of a report: per model group and allocation axis, the figure, the per-budget
optima with their QC flags, the power law and its bias note."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.isoflop import conventions, optima, qc
from analysis.isoflop.estimator_choice import NAMES
from analysis.isoflop.approach2 import LABEL, SWEEP_AXES, XLABEL, AxisResult, approach2, main_group
from analysis.options import Options
from analysis.report import figures
from analysis.report.document import Report, fig_link, slug, with_labels
from analysis.report.markdown import fmt, interval, table



def _flop_check(df: pd.DataFrame) -> str | None:
    """Realised training FLOPs vs nominal budget: the fits use the nominal C."""
    sel = df[np.isfinite(df["flop_budget"].astype(float)) & np.isfinite(df["train_flops"])]
    if sel.empty:
        return None
    ratio = sel["train_flops"] / sel["flop_budget"].astype(float)
    return (f"Realised train FLOPs / nominal budget: {ratio.min():.3f}–{ratio.max():.3f} "
            "(fits use the nominal budget as C).")


def _powerlaw_rows(r: AxisResult) -> list[dict[str, object]]:
    rows = []
    for law in (r.law, r.alternative):
        if law is None:
            continue
        name = NAMES[law.estimator] + (" — the headline" if law is r.law else "")
        rows.append({
            "quantity": f"{LABEL[r.axis]} ∝ C^gamma", "optima": name,
            "gamma": fmt(law.gamma),
            "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs")),
            "95 % t-interval (OLS)": interval(*law.ci_gamma),
            "k": fmt(law.k), "R²": fmt(law.r2), "budgets used": len(law.C),
            "paper gamma": fmt(r.paper),
        })
    return rows


def _optima_section(r: AxisResult) -> str:
    t = optima.optima_table(r.optima)
    t["95 % (run bootstrap)"] = [interval(a, b) for a, b in zip(t["opt_lo"], t["opt_hi"])]
    t["parabola 95 %"] = [interval(a, b) for a, b in zip(t["parabola_lo"], t["parabola_hi"])]
    t["power law"] = ["used" if r.law is not None and b in set(r.law.C.tolist()) else "excluded"
                      for b in t["budget"]]
    cols = ["budget", "n_runs", "optimum", "95 % (run bootstrap)", "parabola_optimum", "parabola 95 %",
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


def _axis_block(report: Report, r: AxisResult, name: str, out_dir: Path,
                mu_of: dict[str, float] | None = None) -> list[str]:
    label, xlabel = LABEL[r.axis], XLABEL[r.axis]
    stem = out_dir / "figures" / f"isoflop_{slug(name)}_{r.axis}"
    blocks = [f"#### {label}", fig_link(report, figures.plot_isoflop(r.optima, xlabel, stem, mu_of), out_dir,
                                         f"isoFLOP {name}: loss vs {xlabel}"),
              _optima_section(r)]
    for o in r.optima:
        for p in o.points_excluded:
            report.warnings.append(f"{name}: {label} at C={o.budget:.3g}: point {p['run_id']} "
                                   f"({p['value']:.4g}) left out: {p['code']}")
        for w in o.warnings:
            report.warnings.append(f"{name}: {label} at C={o.budget:.3g}: {w}")
        if not o.ok:
            report.warnings.append(f"{name}: {label} at C={o.budget:.3g} left out of the power law: "
                                   + "; ".join(o.reasons))
    if r.law is None:
        blocks.append(f"**No power law for {label}**: {r.reason}.")
        return blocks
    blocks.append("Compute-optimal power law (ln y = ln k + gamma ln C):\n\n" + table(pd.DataFrame(_powerlaw_rows(r))))
    if r.choice is not None:
        blocks.append(f"**Headline estimator**: {r.choice.reason()}.")
    blocks += [f"**Bias note**: {n}." for n in r.notes]
    report.warnings += [f"{name}: {label} power law: {w}" for w in r.law.warnings + r.notes]
    key = f"{slug(name)}.gamma_{r.axis}"
    report.metrics[key] = r.law.gamma
    lo, hi = r.law.boot_ci_gamma("runs")
    report.metrics[f"{key}_runs_lo"], report.metrics[f"{key}_runs_hi"] = lo, hi
    if r.alternative is not None:
        report.metrics[f"{key}_{r.alternative.estimator}"] = r.alternative.gamma
    pstem = out_dir / "figures" / f"powerlaw_{slug(name)}_{r.axis}"
    blocks.append(fig_link(report, figures.plot_powerlaw(r.law, r.optima, label, pstem), out_dir,
                            f"power law {name}: {label} vs C"))
    return blocks


def isoflop_group(report: Report, name: str, df: pd.DataFrame, out_dir: Path, opts: Options,
                  axes: tuple[str, ...], rng: np.random.Generator) -> None:
    """Approach 2 on every supported axis of one group of runs."""
    blocks = [f"### `{name}`"]
    check = _flop_check(df)
    if check:
        blocks.append(check)
    skipped = []
    df = with_labels(df)
    # the figures mark each point's µ_rec; optima name runs by the "run" label (isoflop_optima)
    mu_of = dict(zip(df["run"].astype(str), df["mean_recurrence"].astype(float)))
    for axis in axes:
        supported, why = optima.isoflop_supported(df, axis)
        if not supported:
            skipped.append(f"{LABEL[axis]}: {why}")
            continue
        r = approach2(df, name, axis, opts, rng, looped="mean_recurrence" in axes)
        report.axes.append(r)
        if axis == "tokens":
            if r.law is not None:
                report.approach2[name] = r.law
            else:
                report.approach2_skipped[name] = f"no D* power law ({r.reason})"
        blocks += _axis_block(report, r, name, out_dir, mu_of)
    if skipped and len(skipped) == len(axes):
        report.add(f"### `{name}`\n\nIsoFLOP analysis skipped: " + "; ".join(skipped) + ".")
        return
    blocks += [f"Not analysed: {s}." for s in skipped]
    mine = [r for r in report.axes if r.group == name]
    if mine:  # the Chinchilla-style figure of this model: isoFLOP curves beside optimum vs compute
        png = figures.plot_isoflop_summary([(r.optima, r.law, XLABEL[r.axis], LABEL[r.axis]) for r in mine],
                                         f"{name}: isoFLOP curves and compute-optimal power laws",
                                         out_dir / "figures" / f"chinchilla_{slug(name)}", mu_of)
        blocks.insert(1, fig_link(report, png, out_dir, f"{name}: isoFLOP curves and compute-optimal laws"))
    report.add("\n\n".join(blocks))


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
        f"test), `{qc.DISAGREE}` (parabola and spline optima > {opts.qc.disagree_steps:g} grid steps apart; "
        + ("excludes" if opts.qc.exclude_disagreement else "a warning only: the parabola is biased, so "
           "disagreeing with it is no measured reason to drop a budget") + "). Thresholds: `--qc KEY=VALUE`. "
        + ("Flagged points and budgets are **kept** (--keep-flagged) and marked. " if opts.keep_flagged else
           "Flagged points and budgets are **left out** of the power law (--keep-flagged keeps them). ")
        + f"A power law needs >= {opts.min_budgets} clean budgets (--min-budgets); with fewer there is "
        "none, never a fit through flagged optima. Power-law intervals: the run bootstrap propagated "
        "through every budget's optimum, and the OLS t-interval (scatter of the optima about the line). "
        "The paper's exponents are shown for comparison only.")


def isoflop_section(report: Report, usable: pd.DataFrame, out_dir: Path, opts: Options) -> None:
    report.add(isoflop_intro(opts))
    rng = np.random.default_rng(opts.seed)
    for name, grp in usable.groupby(["model_kind", "model_name"], sort=True, dropna=False):
        isoflop_group(report, " / ".join(str(n) for n in name), grp, out_dir, opts, SWEEP_AXES, rng)
    # Model sizes varied at fixed budgets and one µ_rec (a Chinchilla-style size sweep): N* across models.
    if usable["mean_recurrence"].nunique() <= 1 and optima.isoflop_supported(usable, "params")[0]:
        isoflop_group(report, "all models", usable, out_dir, opts, ("params",), rng)


def conventions_section(report: Report, usable: pd.DataFrame, opts: Options) -> None:
    """The compute-convention sensitivity table of a sweep (analysis.isoflop.conventions)."""
    name, runs, _ = main_group(usable)
    t = conventions.convention_table(runs, name, opts)
    report.conventions = {"group": name, "default": {"flops": conventions.DEFAULT[0],
                                                     "params": conventions.DEFAULT[1]},
                          "why": conventions.DEFAULT_WHY, "table": t.to_dict("records")}
    report.add("## Compute conventions\n\n"
               f"The isoFLOP exponents of `{name}` under each way of counting compute (columns) and "
               "parameters (rows): each budget's optimum is re-read on the parameter count, and under executed "
               "FLOPs each budget is valued at what its compute-optimal run executes (the budget times the "
               "executed/reference FLOP ratio at the optimum); exponents with their 95 % run-bootstrap "
               "interval (analysis/isoflop/conventions.py). "
               f"**Default: {conventions.DEFAULT_WHY}.** A count the runs did not log says \"not logged\" "
               "(executed FLOPs and embedding counts are logged by newer runs only).\n\n" + table(t))
