"""The numbers an analysis run logs to MLflow as metrics (``analysis.runs.store.log_analysis_run``),
read off the results (analysis.results): exponents with their intervals, law parameters, held-out
errors, stability outcome counts."""
from __future__ import annotations

import re

from analysis.report.document import slug
from analysis.results import Results


def metrics(res: Results) -> dict[str, float]:
    out: dict[str, float] = {}
    if res.stability is not None:
        t = res.stability.table
        counts = t.groupby("injection")["outcome"].value_counts().unstack(fill_value=0)
        for (injection, outcome), value in counts.stack().items():
            out[f"stability.{injection}.{outcome}"] = float(value)
    for r in res.axes:
        if r.law is None:
            continue
        key = f"{slug(r.group)}.gamma_{r.axis}"
        out[key] = r.law.gamma
        out[f"{key}_lo"], out[f"{key}_hi"] = r.law.boot_ci_gamma()
        if r.alternative is not None:
            out[f"{key}_{r.alternative.estimator}"] = r.alternative.gamma
    for law in res.laws:
        for h in law.holdouts:
            suffix = "" if h["column"] == "flop_budget" else "_model"
            out[f"law.{law.name}.holdout{suffix}_mean_are"] = h["mean_are"]
        for k in ("alpha", "beta", "E", "phi", "z"):
            if k in law.fit.params:
                out[f"law.{law.name}.{k}"] = law.fit.params[k]
    for _, row in res.approaches.iterrows():
        out[f"approaches.{slug(row['isoFLOP group'])}.{row['law']}.difference"] = row["difference"]
    if res.holdout is not None and not res.holdout.reason:
        out["holdout.mean_abs_error_pct"] = res.holdout.mean_abs_error_pct
    for s in res.seeds:
        for b in s.budgets:
            if b.sd == b.sd:  # not NaN: the budget has replicates
                out[f"{slug(s.group)}.seed_sd.C{b.budget:.3g}"] = b.sd
    # MLflow accepts only alphanumerics, _ - . space : / in a metric name ("C1e+12" -> "C1e12").
    return {_METRIC_NAME_BAD.sub("", k): float(v) for k, v in out.items()}


_METRIC_NAME_BAD = re.compile(r"[^\w\-. :/]")
