"""DIR/points.csv: one row per input row (a table's row, a sweep's run), so every exclusion can be audited:
its budget, whether it entered the isoFLOP power laws (``used``), and each flag with its reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.isoflop.approach2 import LABEL, AxisResult
from analysis.report.summary import run_label

COLUMNS = ["run", "budget", "loss", "used", "flags"]


def points_frame(runs: pd.DataFrame, axes: list[AxisResult]) -> pd.DataFrame:
    """runs: every input row (runs excluded before fitting carry a ``reason``); axes: every Approach 2
    result. A row is used when it entered every power law of an axis it was analysed on."""
    rows = []
    for _, r in runs.iterrows():
        label = run_label(r)
        flags, used = [], True
        if isinstance(r.get("reason"), str) and r.get("reason"):
            flags.append(f"run excluded: {r['reason']}")
            used = False
        for a in axes:
            for o in a.optima:
                mine = [p for p in o.points_excluded if p["run_id"] == label]
                if label not in o.run_ids and not mine:
                    continue
                in_law = a.law is not None and o.budget in set(a.law.C.tolist())
                flags += [f"{LABEL[a.axis]}: {p['code']}: {p['reason']}" for p in mine]
                if not in_law:
                    why = "; ".join(o.reasons) if o.reasons else (a.reason or "no power law")
                    flags.append(f"{LABEL[a.axis]}: budget left out of the power law ({why})")
                used = used and in_law and label in o.run_ids
        budget = float(r["flop_budget"]) if np.isfinite(float(r["flop_budget"])) else None
        rows.append({"run": label, "budget": budget, "loss": float(r["loss"]),
                     "used": bool(used and axes), "flags": " | ".join(flags)})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_points(runs: pd.DataFrame, axes: list[AxisResult], out_dir: Path) -> Path:
    path = out_dir / "points.csv"
    points_frame(runs, axes).to_csv(path, index=False)
    return path
