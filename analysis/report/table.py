"""Analysis of a researcher's own table (``python -m analysis --csv FILE``): the same isoFLOP
analysis, parametric laws, report, figures and summary.json as a sweep, without MLflow."""
from __future__ import annotations

from pathlib import Path

from analysis.compute import compute_table
from analysis.options import Options
from analysis.report.render import render
from analysis.results import save
from analysis.runs.table import Table


def analyze_table(t: Table, out_dir: str | Path, opts: Options | None = None):
    """Analyse a validated table (analysis.runs.table.load_table); returns (report path, results)."""
    results = compute_table(t, opts or Options())
    path, _ = render(results, out_dir)
    save(results, out_dir)
    return path, results
