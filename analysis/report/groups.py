"""``python -m analysis --csv FILE --group COL``: every group of a table analysed on its own (its own QC
stage, estimator choice and draws; a full report per group in OUT/<group>/), then their exponents and
differences compared (analysis.comparison: OUT/comparison.md, comparison.json). Printed first: per
group, the exponents with intervals, N* + D*, and, where the table carries a published QC decision per
row (``--reference-qc COL``, default ``outlier``), how often ours agrees with it."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import comparison
from analysis.compute import compute_table
from analysis.isoflop.groups import decisions
from analysis.options import Options
from analysis.report.render import render
from analysis.results import save
from analysis.runs.table import Table, TableError

REFERENCE_DEFAULT = "outlier"
TRUE = {"true", "1", "yes", "y", "t"}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "group"


def reference_column(path: str, column: str | None) -> pd.Series | None:
    """The published per-row exclusion (True: excluded) from the CSV, by row position; None without it."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    name = column or REFERENCE_DEFAULT
    if name not in raw:
        if column:
            raise TableError(f"--reference-qc {column}: no such column (columns: {', '.join(raw.columns)})")
        return None
    return raw[name].str.strip().str.lower().isin(TRUE).reset_index(drop=True)


def agreement(results, ref: pd.Series) -> tuple[float, int]:
    """Share of the rows where our QC (used or not) agrees with the published decision."""
    decided = decisions(results.isoflop)
    ours = ~decided["used"].astype(bool)
    theirs = ref.iloc[decided.index.to_numpy()].to_numpy()
    return float(np.mean(ours.to_numpy() == theirs)), int(len(decided))


def _sum_line(results) -> str | None:
    """N* + D* exponents, and whether C = 6ND holds in the table (only then must they sum to 1)."""
    by = {r.axis: r for r in results.axes if r.law is not None}
    if not {"params", "tokens"} <= set(by):
        return None
    total = by["params"].law.gamma + by["tokens"].law.gamma
    f = results.usable
    ratio = (6 * f["n_params"].astype(float) * f["tokens"].astype(float) / f["flop_budget"].astype(float)).to_numpy()
    ratio = ratio[np.isfinite(ratio)]
    spread = f" (6·N·D/C spans {ratio.min():.2f}–{ratio.max():.2f})" if ratio.size else ""
    holds = ratio.size and ratio.max() / ratio.min() < 1.25
    return (f"N* + D* exponents = {total:.3f}" + spread
            + ("" if holds else ": C ≠ 6·N·D in this table, so they need not sum to 1"))


def group_lines(label: str, results, ref: pd.Series | None) -> list[str]:
    out = []
    if ref is not None:
        share, n = agreement(results, ref)
        out.append(f"QC agrees with the published decision on {share:.3f} of {n} rows")
    for r in results.axes:
        if r.law is None:
            out.append(f"{r.axis}: no power law ({r.reason})")
            continue
        lo, hi = r.interval
        out.append(f"{r.axis}: {r.law.gamma:.3f} [{lo:.3f}, {hi:.3f}] ({r.law.estimator}, {len(r.law.C)} budgets)")
    s = _sum_line(results)
    if s:
        out.append(s)
    return out


def reference_agreement(results, path: str, column: str | None) -> list[str]:
    """The printed lines of one analysed table (no --group): only where it carries a published QC column."""
    ref = reference_column(path, column)
    return group_lines("table", results, ref) if ref is not None else []


def analyze_groups(t: Table, out_dir: str | Path, opts: Options, reference: str | None = None) -> Path:
    """Analyse each group of the table; print a block per group; returns the comparison's path."""
    out_dir = Path(out_dir)
    ref = reference_column(t.path, reference)
    frame = t.frame
    analyses, extra = {}, {}
    for name, sub in frame.groupby("group", sort=True):
        sub_table = replace(t, frame=sub.assign(model_name=name))
        results = compute_table(sub_table, opts)
        render(results, out_dir / _slug(name))
        save(results, out_dir / _slug(name))
        analyses[name] = results.isoflop
        extra[name] = group_lines(name, results, ref)
        print(f"{name}: " + "; ".join(extra[name]))
    return comparison.write(analyses, out_dir, f"Groups of `{Path(t.path).name}` by `{t.columns.get('group')}`",
                            extra)
