"""DIR/points.csv: one row per input row (a table's row, a sweep's run), so every decision can be audited:
its N, D, µ_rec, budget and loss; ``used`` (the QC stage kept it: every fit reads it), the ``stage`` and
``reason`` that dropped it (analysis.isoflop.qc) with one line of ``detail``; and ``notes`` where a kept
run's budget still stayed out of an axis's power law (its optimum at the kept grid's edge)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.isoflop.approach2 import LABEL
from analysis.report.summary import _finite_or_none, run_label

COLUMNS = ["run", "group", "budget", "N", "D", "mu_rec", "loss", "used", "stage", "reason", "detail", "notes"]


def points_frame(res) -> pd.DataFrame:
    """Every input row of the results with the QC stage's decision."""
    decided = {}
    for g in res.isoflop:
        if g.frame is None:
            continue
        for i, r in g.frame.iterrows():
            decided[i] = (g.name, bool(r["used"]), r["qc_stage"], r["qc_reason"], r["qc_detail"])
    left_out: dict[str, list[str]] = {}
    for a in res.axes:
        used = set(a.law.C.tolist()) if a.law is not None else set()
        for o in a.optima:
            if o.budget not in used:
                why = "; ".join(o.reasons) if o.reasons else (a.reason or "no power law")
                for rid in o.run_ids:
                    left_out.setdefault(rid, []).append(f"{LABEL[a.axis]}: budget left out of the power law ({why})")
    rows = []
    for i, r in res.runs.iterrows():
        label = run_label(r)
        group, used, stage, reason, detail = decided.get(i, (None, False, "", "", ""))
        if isinstance(r.get("reason"), str) and r.get("reason"):
            used, stage, reason, detail = False, "run", "run_excluded", r["reason"]
        elif i not in decided:
            stage, reason, detail = "none", "no_group", "in no isoFLOP group (no FLOP budget)"
        rows.append({"run": label, "group": group, "budget": _finite_or_none(r.get("flop_budget")), "N": _finite_or_none(r.get("n_params")),
                     "D": _finite_or_none(r.get("tokens")), "mu_rec": _finite_or_none(r.get("mean_recurrence")), "loss": _finite_or_none(r.get("loss")),
                     "used": used, "stage": stage, "reason": reason, "detail": detail,
                     "notes": " | ".join(left_out.get(label, []))})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_points(res, out_dir: Path) -> Path:
    path = out_dir / "points.csv"
    points_frame(res).to_csv(path, index=False)
    return path
