"""Reports: a sweep's (``sweep.analyze``) or a table's (``table.analyze_table``) report.md, figures,
summary.json and points.csv, rendered (``render``) from one computed results object (analysis.compute,
analysis.results) section by section (``isoflop_section``, ``law_section``, ``seeds_section``,
``sections``, ``holdout_section``) with the figures (``figures``), the markdown helpers (``markdown``),
the summary (``summary``) and the MLflow metrics (``metrics``)."""
from analysis.report.render import render
from analysis.report.sweep import FINGERPRINT, analyze
from analysis.report.table import analyze_table

__all__ = ["FINGERPRINT", "analyze", "analyze_table", "render"]
