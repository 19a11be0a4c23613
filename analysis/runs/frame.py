"""The runs frame both inputs produce (MLflow sweeps and tables): which runs are usable, and the
test-time loss columns ``loss_T{T}``."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Test-time losses are logged as eval/loss_T{T}; the T list differs per sweep, so the columns are
# discovered rather than enumerated.
TESTTIME_COLUMN = re.compile(r"^loss_T(\d+)$")


class NoRunsError(RuntimeError):
    """The sweep has no usable (finished, non-diverged) runs."""


def split_usable(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable runs, excluded runs with a ``reason`` column).

    Usable = FINISHED, not tagged diverged, with a finite final loss.  The
    reasons are checked in that order and the first that applies is reported.
    """
    finished = df["status"] == "FINISHED"
    diverged = df["diverged"]
    finite = np.isfinite(df["loss"].to_numpy(dtype=float))
    reason = pd.Series("", index=df.index, dtype="string")
    reason[~finite] = "no finite eval/loss"
    reason[diverged] = "diverged"
    reason[~finished] = "status " + df["status"].fillna("UNKNOWN")
    excluded = df.loc[reason != ""].assign(reason=reason[reason != ""])
    return df.loc[reason == ""].copy(), excluded


def testtime_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if TESTTIME_COLUMN.match(str(c))]


def testtime_long(df_raw: pd.DataFrame) -> pd.DataFrame:
    """Long frame [run_id, T, loss] of the test-time losses; missing T dropped."""
    cols = testtime_columns(df_raw)
    if not cols:
        return pd.DataFrame({"run_id": pd.Series(dtype="string"),
                             "T": pd.Series(dtype=int), "loss": pd.Series(dtype=float)})
    long = df_raw[["run_id", *cols]].melt(id_vars="run_id", var_name="T", value_name="loss")
    long["T"] = long["T"].str[len("loss_T"):].astype(int)
    long = long[np.isfinite(long["loss"].to_numpy(dtype=float))]
    return long.sort_values(["run_id", "T"]).reset_index(drop=True)
