"""render(results, out_dir): report.md (headline first, warnings next, then the sections), figures/,
summary.json and points.csv, all drawn from one computed ``analysis.results.Results``. Nothing is fitted
here, so ``python -m analysis --redraw DIR`` redraws a report from DIR/results.pkl in seconds."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from analysis.isoflop.groups import decisions
from analysis.progress import stage
from analysis.report.document import warnings_section
from analysis.report.holdout_section import holdout_section
from analysis.report.isoflop_section import conventions_section, group_section, isoflop_intro
from analysis.report.law_section import law_section
from analysis.report.markdown import table
from analysis.report.points import write_points
from analysis.report.sections import (adaptive_markdown, approaches_section, excluded_section, runs_section,
                                      scaling_plots_section, stability_section, testtime_section)
from analysis.report.seeds_section import branches_section, seeds_section
from analysis.report.summary import build_summary, headline_markdown, runs_entry, testtime_entries, write_summary
from analysis.results import Results


def _versions_line(res: Results) -> str:
    return ", ".join(f"{name} {version}" for name, version in res.versions.items())


def _sweep_header(res: Results) -> str:
    src = res.source
    return "\n".join([
        "## About this analysis",
        "",
        f"- experiment: `{src['experiment']}`; tracking store: `{src['tracking_uri']}`",
        f"- generated: {res.generated}; {_versions_line(res)}",
        f"- pretrain runs found: {len(res.runs)}; used: {len(res.usable)}; excluded: {len(res.excluded)}",
        "- loss = `eval/loss`, validation loss in nats/token at T = mu_rec",
    ])


def _table_header(res: Results) -> str:
    t = res.table
    cols = ", ".join(f"{role} = `{name}`" for role, name in t.columns.items() if name)
    bins = t.bins.assign(max_rel_dev=100 * t.bins["max_rel_dev"]).rename(
        columns={"budget": "nominal budget C", "min": "smallest C", "max": "largest C",
                 "max_rel_dev": "largest deviation (%)"})
    return "\n".join([
        "## About this analysis", "",
        f"- table: `{t.path}` ({len(t.frame)} rows); generated {res.generated}",
        f"- columns: {cols}",
        *(f"- {n}" for n in t.notes), "",
        "FLOP budgets (runs within the relative tolerance of each other share one nominal budget, the "
        "geometric mean of their C to 3 significant digits; the fits use the nominal value):", "",
        table(bins),
    ])


def _sections(res: Results, out_dir: Path) -> list[str]:
    """The report's sections after its header, in order."""
    opts = res.options
    sections = []
    if res.kind == "mlflow":
        sections.append(excluded_section(res.excluded))
        adaptive = adaptive_markdown(res.adaptive)
        if adaptive:
            sections.append(adaptive)
        if res.stability is not None:
            sections.append(stability_section(res.stability, res.runs, out_dir))
    sections.append(isoflop_intro(opts))
    sections += [group_section(g, out_dir) for g in res.isoflop]
    sections.append(seeds_section(res.seeds))
    branches = branches_section(res.branches)
    if branches:
        sections.append(branches)
    if res.conventions is not None:
        sections.append(conventions_section(res.conventions))
    if res.testtime is not None:
        sections.append(testtime_section(res.testtime, res.usable, out_dir))
    sections.append(law_section(res.usable, res.laws, res.laws_supported, opts.n_boot, out_dir))
    sections.append(approaches_section(res))
    if res.holdout is not None:
        sections.append(holdout_section(res.holdout, out_dir))
    sections.append(scaling_plots_section(res.usable, bool(res.laws), out_dir))
    sections.append(runs_section(res.usable))
    return sections


def runs_at_one(res: Results) -> list[float]:
    """The budgets of a looped sweep whose lowest-loss run has µ_rec = 1 (from the runs, not the fits)."""
    u = res.usable
    if "mean_recurrence" not in u or u["mean_recurrence"].nunique() < 2:
        return []
    out = []
    for C, grp in u[np.isfinite(u["flop_budget"].astype(float))].groupby("flop_budget"):
        best = grp.loc[grp["loss"].astype(float).idxmin()]
        if float(best["mean_recurrence"]) == 1.0 and grp["mean_recurrence"].nunique() >= 2:
            out.append(float(C))
    return out


def summary_of(res: Results) -> dict:
    """summary.json (analysis.report.summary) of the results."""
    fits = res.testtime.fits if res.testtime is not None else {}
    qc_reasons = decisions(res.isoflop)["qc_reason"]
    dropped = qc_reasons[qc_reasons != "none"].tolist()
    n_used = len(res.usable) - len(dropped)
    summary = build_summary(res.axes, res.laws, testtime_entries(res.usable, fits) if fits else [],
                            runs_entry(n_used, res.excluded["reason"].tolist() + dropped), res.source,
                            res.holdout, asdict(res.options.qc), res.seeds, res.predictions, runs_at_one(res))
    if res.conventions is not None:
        summary["conventions"] = res.conventions
    return summary


def render(res: Results, out_dir: str | Path) -> tuple[Path, dict]:
    """Write report.md, figures/, summary.json and points.csv into out_dir; returns (report path, summary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage("report (figures, report.md, summary.json)"):
        header = _sweep_header(res) if res.kind == "mlflow" else _table_header(res)
        body = _sections(res, out_dir)
        summary = summary_of(res)
        # headline first (right under the title), the warnings after the metadata block, then the details
        sections = [res.title, headline_markdown(summary["headline"]), header, warnings_section(res.warnings),
                    *body]
        path = out_dir / "report.md"
        path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        write_summary(summary, out_dir)
        write_points(res, out_dir)
    return path, summary
