"""Exponents of several analyses side by side, and their differences with intervals: the one comparison
behind ``python -m analysis --csv FILE --group COL`` (each group of a table with its own QC) and
``python -m analysis.compare`` (sweeps or tables).

Each input is analysed by the same path as a report (the QC stage, Approach 2 with its estimator
choice and noise draws). A difference γ_a − γ_b is read from the two laws' headline draws, paired by
index (the draws of two independent analyses are independent, so any pairing is a draw of the
difference); its 95 % interval either excludes 0 (the exponents differ) or not.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL, not_identified, percentile_interval
from analysis.isoflop.approach2 import LABEL
from analysis.isoflop.powerlaw import HEADLINE
from analysis.report.markdown import table


def _laws(groups) -> dict[str, object]:
    """axis -> AxisResult of the first isoFLOP group that fitted it."""
    out = {}
    for g in groups:
        for r in g.results:
            out.setdefault(r.axis, r)
    return out


def exponent_rows(analyses: dict[str, list]) -> list[dict]:
    """analyses: label -> its isoFLOP groups (analysis.isoflop.groups.IsoflopGroup). One row per (label,
    axis): the exponent, its interval, whether identified, how many runs QC kept."""
    rows = []
    for label, groups in analyses.items():
        kept = sum(int(g.frame["used"].sum()) for g in groups if g.frame is not None)
        total = sum(len(g.frame) for g in groups if g.frame is not None)
        for axis, r in _laws(groups).items():
            row = {"analysis": label, "quantity": LABEL[axis], "axis": axis, "runs_used": kept, "runs": total}
            if r.law is None:
                row.update(exponent=None, interval=None, identified=False, why=r.reason)
            else:
                lo, hi = r.interval
                why = not_identified(r.law.gamma, lo, hi)
                row.update(exponent=r.law.gamma if why is None else None, fitted=r.law.gamma,
                           interval=[lo, hi], identified=why is None, why=why, estimator=r.law.estimator,
                           budgets=len(r.law.C))
            rows.append(row)
    return rows


def difference_rows(analyses: dict[str, list]) -> list[dict]:
    """Every pair of analyses, every axis both identified: γ_a − γ_b with its 95 % interval."""
    laws = {label: _laws(groups) for label, groups in analyses.items()}
    rows = []
    for a, b in itertools.combinations(laws, 2):
        for axis in laws[a]:
            ra, rb = laws[a].get(axis), laws[b].get(axis)
            if ra is None or rb is None or ra.law is None or rb.law is None:
                continue
            da, db = ra.law.boot.get(HEADLINE), rb.law.boot.get(HEADLINE)
            row = {"a": a, "b": b, "quantity": LABEL[axis], "axis": axis,
                   "difference": ra.law.gamma - rb.law.gamma}
            if da is None or db is None:
                row.update(interval=None, verdict="no interval (no draws)")
            else:
                n = min(da[0].size, db[0].size)
                lo, hi = percentile_interval(da[0][:n] - db[0][:n], LEVEL)
                row.update(interval=[lo, hi], verdict="differ" if lo > 0 or hi < 0 else "not distinguishable")
            rows.append(row)
    return rows


def _fmt(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"


def lines(exponents: list[dict], differences: list[dict]) -> list[str]:
    """The comparison's answer, one line per exponent and per difference."""
    out = []
    for r in exponents:
        if r["identified"]:
            out.append(f"{r['analysis']}: {r['quantity']} ∝ C^{_fmt(r['exponent'])} "
                       f"[{_fmt(r['interval'][0])}, {_fmt(r['interval'][1])}] ({r['runs_used']} of {r['runs']} "
                       "runs used)")
        else:
            out.append(f"{r['analysis']}: {r['quantity']} not identified — {r['why']}")
    for d in differences:
        ci = (f"[{_fmt(d['interval'][0])}, {_fmt(d['interval'][1])}]" if d["interval"] else "(no interval)")
        out.append(f"{d['quantity']} exponent, {d['a']} − {d['b']}: {d['difference']:+.3f} {ci}: {d['verdict']}")
    return out


def write(analyses: dict[str, list], out_dir: Path, title: str, extra: dict[str, list[str]] | None = None) -> Path:
    """comparison.md (the answer first) and comparison.json in out_dir; extra: label -> more lines."""
    exps, diffs = exponent_rows(analyses), difference_rows(analyses)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = lines(exps, diffs)
    body = [f"# {title}", "## Answer", "\n".join(f"- {line}" for line in head)]
    if extra:
        body += ["## Per analysis", "\n".join(f"- {k}: " + "; ".join(v) for k, v in extra.items())]
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in ("axis",)} for r in exps])
    if len(frame):
        body += ["## Exponents", table(frame)]
    if diffs:
        body += ["## Differences (95 % intervals from the two analyses' draws)", table(pd.DataFrame(diffs))]
    path = out_dir / "comparison.md"
    path.write_text("\n\n".join(body) + "\n", encoding="utf-8")
    from analysis.report.summary import _clean

    (out_dir / "comparison.json").write_text(json.dumps(_clean({"exponents": exps, "differences": diffs,
                                                                 "lines": head}), indent=2, ensure_ascii=False)
                                             + "\n", encoding="utf-8")
    return path
