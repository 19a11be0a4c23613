"""summary.json and the headline: the one writer used by the MLflow path and the table path.

The headline is the report's first block, the "headline" list of summary.json and the analysis run's
description in MLflow (tag mlflow.note.content): each compute-optimal exponent with its 95 % interval
next to the paper's value (or why it is not identified), the test-time saturation, and how many runs
were used or excluded and why. docs/analysis.md describes every key.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL, MAX_EXPONENT_WIDTH, not_identified
from analysis.isoflop.approach2 import LABEL, PAPER_SOURCE, AxisResult
from analysis.isoflop.estimator_choice import NAMES
from analysis.report.seeds_section import seeds_line
from analysis.runs.labels import run_label
from analysis.testtime.saturation import SATURATION_REL, SaturationFit, advice

SCHEMA_VERSION = 1
PAPER_TESTTIME = "Parcae (arXiv 2604.12946) §5.3, App. L"
MAX_TESTTIME_IN_HEADLINE = 6


def _clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def isoflop_entry(r: AxisResult) -> dict:
    law = r.law
    lo, hi = r.interval if law else (float("nan"), float("nan"))
    why = not_identified(law.gamma, lo, hi) if law else r.reason
    entry = {"group": r.group, "estimator": f"{r.estimator} ({NAMES[r.estimator]})",
             "estimator_choice": r.choice.entry() if r.choice else None,
             "identified": law is not None and why is None,
             # no point estimate for an exponent that is not identified (its value stays in "fitted")
             "exponent": law.gamma if law and why is None else None,
             "fitted": law.gamma if law else None,
             "interval": [lo, hi] if law else None,
             "interval_method": ("each run's loss redrawn at its grid point from the per-run noise (SD with "
                                 "its χ² uncertainty), optima and line refitted"
                                 + ("; budgets resampled (lack of fit)" if law and law.lack_of_fit
                                    and law.lack_of_fit["budgets_resampled"] else "")),
             "noise_sd": r.noise.sd if r.noise else None,
             "lack_of_fit": law.lack_of_fit if law else None,
             "prefactor": law.k if law and why is None else None,
             "optima": [optimum_entry(o, law) for o in r.optima],
             "budgets_used": sorted(law.C.tolist()) if law else [],
             "budgets_excluded": r.budgets_excluded(),
             "points_excluded": r.points_excluded(),
             "alternative": ({"estimator": r.alternative.estimator, "exponent": r.alternative.gamma}
                             if r.alternative else None),
             "notes": list(r.notes)}
    if law is None:
        entry["reason"] = r.reason
    if r.paper is not None:
        entry["paper"] = {"exponent": r.paper, "source": PAPER_SOURCE}
    return entry


def optimum_entry(o, law) -> dict:
    """One budget's optimum on one axis (summary.json["isoflop"][axis]["optima"])."""
    lo, hi = o.interval()
    return {"budget": o.budget, "estimator": o.estimator, "optimum": o.opt if np.isfinite(o.x_opt) else None,
            "interval": [lo, hi], "loss_at_optimum": o.y_opt, "runs": len(o.run_ids),
            "in_power_law": bool(law is not None and o.budget in set(law.C.tolist())),
            "flags": [f"{f.code}: {f.reason}" for f in o.flags]}


def law_entry(res) -> dict:
    """One parametric law (lawreport.LawResult): parameters, allocation exponents, intervals."""
    params = res.params
    names = [k for k in ("E", "A", "B", "alpha", "beta", "phi", "Z", "z", "a_opt", "b_opt", "mu_opt", "r_opt")
             if k in params]
    out = {k: params[k] for k in names}
    out["intervals"] = {k: list(res.interval(k)) for k in names}
    out["warnings"] = list(res.warnings)
    return out


def testtime_entry(row: pd.Series, fit: SaturationFit) -> dict:
    return {"run": run_label(row), "config_hash": row.get("config_hash"),
            "mu_rec": float(row["mean_recurrence"]), "C": _finite_or_none(row.get("flop_budget")),
            "n_T": int(fit.T.size),
            "L_inf": fit.L_inf, "Z": fit.Z, "z": fit.z, "intervals": fit.intervals(),
            "identified": bool(fit.z_identified), "T_star": fit.T_star, "flags": list(fit.flags)}


def _finite_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def testtime_entries(usable: pd.DataFrame, fits: dict[str, SaturationFit]) -> list[dict]:
    meta = usable.set_index(usable["run_id"].astype(str))
    entries = [testtime_entry(meta.loc[rid], fit) for rid, fit in fits.items()]
    return sorted(entries, key=lambda e: (e["mu_rec"], e["C"] if e["C"] is not None else 0.0))


def runs_entry(n_used: int, excluded_reasons: pd.Series | list[str]) -> dict:
    counts = pd.Series(list(excluded_reasons), dtype=object).value_counts()
    return {"used": int(n_used), "excluded": {str(k): int(v) for k, v in counts.items()}}


def _exponent_line(r: AxisResult, show_group: bool) -> str:
    label = LABEL.get(r.axis, r.axis)
    paper = f"; paper: {r.paper:.2f} ({PAPER_SOURCE})" if r.paper is not None else ""
    where = f" [{r.group}]" if show_group else ""
    if r.law is None:
        return f"{label} ∝ C^γ{where}: not identified — {r.reason}{paper}"
    lo, hi = r.interval
    why = not_identified(r.law.gamma, lo, hi)
    if why:
        return (f"{label} ∝ C^γ{where}: not identified — {why} ({len(r.law.C)} budgets; an identified "
                f"exponent has an interval excluding 0 and at most {MAX_EXPONENT_WIDTH:g} wide){paper}")
    ci = f"95 % interval [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "no bootstrap interval"
    return (f"{label} ∝ C^{r.law.gamma:.3f}{where}, {ci} ({NAMES[r.estimator]} optima, {len(r.law.C)} budgets)"
            f"{paper}" + "".join(f"; note: {n}" for n in r.notes))


def _testtime_line(entries: list[dict]) -> str | None:
    if not entries:
        return None
    ident = [e for e in entries if e["identified"] and e["T_star"] is not None
             and np.isfinite(e["T_star"])]
    if not ident:
        why = pd.Series([advice(e["flags"]) or "see the test-time flags" for e in entries]).value_counts()
        return (f"test-time saturation: not identified in any of {len(entries)} curve(s) ("
                + "; ".join(f"{n}: {text}" for text, n in why.items()) + ")")
    shown = sorted(ident, key=lambda e: (e["mu_rec"], e.get("C") or 0))[:MAX_TESTTIME_IN_HEADLINE]
    budgets = len({e.get("C") for e in entries}) > 1  # name the budget when curves of one µ_rec differ in it
    pairs = ", ".join(f"µ_rec = {e['mu_rec']:g}" + (f" at C = {e['C']:.2g}" if budgets and e.get("C") else "")
                      + f": T* = {e['T_star']:.1f}" for e in shown)
    more = f", … ({len(ident) - len(shown)} more)" if len(ident) > len(shown) else ""
    return (f"test-time saturation (T* where the fitted decay is within {100 * SATURATION_REL:g} % of "
            f"L_inf): {pairs}{more}; identified in {len(ident)} of {len(entries)} curve(s); paper: "
            f"saturates near T ≈ µ_rec ({PAPER_TESTTIME})")


def _law_lines(laws: dict[str, dict]) -> list[str]:
    lines = []
    for name, e in laws.items():
        parts = []
        for k, label in (("mu_opt", "µ_rec* exponent"), ("a_opt", "N* exponent"), ("b_opt", "D* exponent")):
            v = e.get(k)
            if v is not None and np.isfinite(v):
                lo, hi = (np.nan if b is None else b for b in e["intervals"].get(k, [None, None]))
                why = not_identified(v, lo, hi)
                ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
                parts.append(f"{label} not identified ({why})" if why else f"{label} {v:.3f}{ci}")
        if parts:
            lines.append(f"Approach 3 (law `{name}`): " + ", ".join(parts))
    return lines


def _runs_line(runs: dict) -> str:
    excl = runs["excluded"]
    why = (" (" + ", ".join(f"{n} × {reason}" for reason, n in excl.items()) + ")") if excl else ""
    return f"runs: {runs['used']} used, {sum(excl.values())} excluded{why}"


def _regime_line(isoflop: list[AxisResult], runs_at_one: list[float] | None = None) -> str | None:
    """What this sweep measured about looping when no µ_rec* law came out: the budgets whose lowest loss
    sits at µ_rec = 1 (from the runs themselves), nothing that this data did not produce."""
    mu = [r for r in isoflop if r.axis == "mean_recurrence"]
    if not mu or any(r.law is not None for r in mu) or not runs_at_one:
        return None
    budgets = ", ".join(f"{c:.3g}" for c in runs_at_one)
    return (f"regime: at {len(runs_at_one)} budget(s) of this sweep (C = {budgets}) the lowest loss is at "
            "µ_rec = 1, so µ_rec* ∝ C^γ is not measured here; docs/pilot.md discusses where looping "
            "starts to pay")


def _holdout_line(entry: dict | None) -> str | None:
    if not entry or not entry.get("rows"):
        return None
    by = {}
    for r in entry["rows"]:
        if r["error_pct"] is not None and np.isfinite(r["error_pct"]):
            by.setdefault(r["approach"], []).append(abs(r["error_pct"]))
    parts = ", ".join(f"{a} {np.mean(e):.2f} %" for a, e in by.items())
    budgets = ", ".join(f"{c:.3g}" for c in entry["budgets"])
    paper = entry["paper"]
    return (f"held-out budget(s) C = {budgets}: mean |compute-optimal loss error| "
            f"{entry['mean_abs_error_pct']:.2f} % ({parts}); paper: "
            + " % and ".join(f"{e:g}" for e in paper["error_pct"]) + f" % ({paper['source']})")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v is not None and np.isfinite(v) else "—"


def prediction_lines(rows: list[dict]) -> list[str]:
    """One headline line per target budget: each approach's N*, D*, µ_rec*, L* with its interval."""
    out = []
    for C in sorted({r["C"] for r in rows}):
        parts = []
        for r in (r for r in rows if r["C"] == C):
            if "reason" in r:
                parts.append(f"{r['approach']}: none ({r['reason']})")
                continue
            vals = [f"{q['label']} = {_fmt(q['value'])} [{_fmt(q['interval'][0])}, {_fmt(q['interval'][1])}]"
                    for k, q in r.items() if isinstance(q, dict) and "label" in q]
            far = " — a far extrapolation" if r.get("far") else ""
            parts.append(f"{r['approach']}: " + ", ".join(vals) + far)
        out.append(f"prediction at C = {C:.3g}: " + "; ".join(parts))
    return out


def headline(isoflop: list[AxisResult], laws: dict[str, dict], testtime: list[dict],
             runs: dict, holdout: dict | None = None, seeds: list | None = None,
             predictions: list[dict] | None = None, runs_at_one: list[float] | None = None) -> list[str]:
    """seeds: analysis.isoflop.seeds.SeedSummary per group (the optimum against its grid neighbours)."""
    show_group = len({r.group for r in isoflop}) > 1
    regime = _regime_line(isoflop, runs_at_one)
    lines = ([regime] if regime else []) + [_exponent_line(r, show_group) for r in isoflop]
    if not isoflop:
        lines.append("isoFLOP exponents: not identified — fewer than 2 FLOP budgets have >= 3 distinct values of "
                     "an allocation variable (an optimum needs points on both sides; see the isoFLOP section)")
    lines += [seeds_line(s, len(seeds) > 1) for s in seeds or []]
    lines += _law_lines(laws)
    lines += prediction_lines(predictions or [])
    for extra in (_holdout_line(holdout), _testtime_line(testtime)):
        if extra:
            lines.append(extra)
    lines.append(_runs_line(runs))
    return lines


def headline_markdown(lines: list[str]) -> str:
    return "## Headline\n\n" + "\n".join(f"- {line}" for line in lines)


def build_summary(isoflop: list[AxisResult], law_results: list, testtime: list[dict], runs: dict,
                  source: dict, holdout=None, qc: dict | None = None, seeds: list | None = None,
                  predictions: list[dict] | None = None, runs_at_one: list[float] | None = None) -> dict:
    """The summary.json object (see module docstring and docs/analysis.md); holdout: analysis.holdout.Holdout;
    seeds: analysis.isoflop.seeds.SeedSummary per group."""
    laws = {res.name: law_entry(res) for res in law_results}
    groups: dict[str, dict] = {}
    for r in isoflop:
        groups.setdefault(r.group, {})[r.axis] = isoflop_entry(r)
    main = next(iter(groups.values()), {})  # the first group: the report's main model family
    held = (holdout.entry() if holdout is not None
            else {"budgets": [], "rows": [], "mean_abs_error_pct": None, "reason": "not run"})
    out = {"schema_version": SCHEMA_VERSION, "source": source,
           "headline": headline(isoflop, laws, testtime, runs, _clean(held), seeds, predictions, runs_at_one),
           "isoflop": main, "laws": laws, "testtime": testtime, "runs": runs, "holdout": held,
           "seeds": [s.entry() for s in seeds or []], "qc": qc or {}, "predictions": predictions or []}
    if len(groups) > 1:
        out["isoflop_groups"] = groups
    return _clean(out)


def write_summary(summary: dict, out_dir: Path) -> Path:
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
