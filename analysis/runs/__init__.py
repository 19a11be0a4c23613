"""Data in: the runs of a sweep from MLflow (``store``, the one MLflow reader) or a researcher's table
(``table``), both as one frame (``frame``: usable runs, test-time columns)."""
from analysis.runs.frame import NoRunsError, split_usable, testtime_columns, testtime_long
from analysis.runs.store import latest_sweep_id, load_runs

__all__ = ["NoRunsError", "latest_sweep_id", "load_runs", "split_usable", "testtime_columns", "testtime_long"]
