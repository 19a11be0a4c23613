"""A report under construction and how it is written: sections, warnings, figures and metrics collected
while the analysis runs, then report.md and summary.json with the headline first."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.holdout import Holdout
from analysis.isoflop.approach2 import AxisResult
from analysis.isoflop.powerlaw import PowerLawFit
from analysis.laws.results import LawResult
from analysis.report.markdown import figure_link
from analysis.report.points import write_points
from analysis.report.summary import build_summary, headline_markdown, run_label, runs_entry, write_summary


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # isoFLOP group -> power law of the tokens optimum (Approach 2), compared with Approach 3 later
    approach2: dict[str, PowerLawFit] = field(default_factory=dict)
    approach2_skipped: dict[str, str] = field(default_factory=dict)  # group -> why it is not compared
    axes: list[AxisResult] = field(default_factory=list)  # every Approach 2 result, for the summary
    testtime: list[dict] = field(default_factory=list)    # summary.json "testtime" entries
    laws: list[LawResult] = field(default_factory=list)
    holdout: Holdout | None = None  # predictions checked against held-out budgets
    qc: dict = field(default_factory=dict)  # the QC thresholds used (summary.json["qc"])
    conventions: dict | None = None  # compute-convention sensitivity of a sweep (summary.json["conventions"])

    def add(self, *blocks: str) -> None:
        self.sections.extend(blocks)


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``run`` column: MLflow run name and config hash (tables never show run ids)."""
    out = df.copy()
    out["run"] = [run_label(r) for _, r in out.iterrows()] if len(out) else pd.Series(dtype=str)
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def fig_link(report: Report, png: Path, out_dir: Path, caption: str) -> str:
    report.figures.append(png)
    return figure_link(png, out_dir, caption)


def _warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return "## Warnings\n\nNone."
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings)


def finish_report(report: Report, out_dir: Path, title: str, n_used: int, excluded_reasons,
                  source: dict, runs: pd.DataFrame) -> tuple[Path, dict]:
    """Headline first (right under the title), warnings next, then the details; writes report.md,
    summary.json (the same headline in both) and points.csv (runs: every input row, those excluded
    before fitting with a ``reason``) and returns (report path, summary)."""
    summary = build_summary(report.axes, report.laws, report.testtime,
                            runs_entry(n_used, excluded_reasons), source, report.holdout, report.qc)
    if report.conventions is not None:
        summary["conventions"] = report.conventions
    report.sections.insert(0, title)
    report.sections.insert(1, headline_markdown(summary["headline"]))
    report.sections.insert(3, _warnings_section(report.warnings))  # after the metadata block
    path = out_dir / "report.md"
    path.write_text("\n\n".join(report.sections) + "\n", encoding="utf-8")
    write_summary(summary, out_dir)
    write_points(runs, report.axes, out_dir)
    return path, summary
