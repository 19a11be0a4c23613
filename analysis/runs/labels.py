"""How runs are named in tables and flags: MLflow run name and config hash (which names runs/<hash>/), or a
table's row; run ids are never shown."""
from __future__ import annotations

import pandas as pd


def run_label(row: pd.Series) -> str:
    """A run's name in tables: MLflow run name and config hash (which names runs/<hash>/)."""
    name = row.get("run_name")
    name = str(name) if name is not None and not pd.isna(name) and str(name) else str(row["run_id"])
    h = row.get("config_hash")
    return f"{name} ({h})" if h is not None and not pd.isna(h) and str(h) else name


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``run`` column: MLflow run name and config hash (tables never show run ids)."""
    out = df.copy()
    out["run"] = [run_label(r) for _, r in out.iterrows()] if len(out) else pd.Series(dtype=str)
    return out


def label_map(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> label."""
    return with_labels(df).set_index(df["run_id"].astype(str))["run"].to_dict()
