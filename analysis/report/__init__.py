"""Reports: a sweep's (``sweep.analyze``) or a table's (``table.analyze_table``) report.md, figures and
summary.json, written section by section (``document``, ``isoflop_section``, ``law_section``,
``sections``) with the figures (``figures``), the markdown helpers (``markdown``) and the summary
(``summary``)."""
from analysis.report.sweep import FINGERPRINT, analyze
from analysis.report.table import analyze_table

__all__ = ["FINGERPRINT", "analyze", "analyze_table"]
