"""End-to-end sweep analysis: load runs, run every analysis the data supports,
write ``report.md`` with figures, and log the bundle to MLflow as an
``run_kind=analysis`` run.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import scipy

from analysis import isoflop, isoflop_qc, plots, stability, workers
from analysis.approach2 import LABEL, XLABEL, AxisResult, Options, approach2
from analysis.approaches import compare_approaches
from analysis.lawreport import LawResult, fit_sweep_laws, law_section, law_supported
from analysis.markdown import figure_link, fmt, interval, table
from analysis.powerlaw import PowerLawFit
from analysis.progress import stage
from analysis.runs import load_runs, split_usable, testtime_columns
from analysis.summary import (build_summary, headline_markdown, run_label, runs_entry, testtime_entries,
                              write_summary)
from analysis.testtime import HUBER_DELTA, SATURATION_REL, fit_testtime_runs, tabulate_testtime
from analysis.testtime_forms import compare_forms
from mlflow.tracking import MlflowClient

# The allocation axes of a sweep of looped models (one model per group, µ_rec varied at fixed C).
SWEEP_AXES = ("mean_recurrence", "tokens")


class NoRunsError(RuntimeError):
    """The sweep has no usable (finished, non-diverged) runs."""


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # isoFLOP group -> power law of the tokens optimum (Approach 2), compared with Approach 3 later
    approach2: dict[str, PowerLawFit] = field(default_factory=dict)
    approach2_skipped: dict[str, str] = field(default_factory=dict)  # group -> why it is not compared
    axes: list[AxisResult] = field(default_factory=list)  # every Approach 2 result, for the summary
    testtime: list[dict] = field(default_factory=list)    # summary.json "testtime" entries
    laws: list[LawResult] = field(default_factory=list)

    def add(self, *blocks: str) -> None:
        self.sections.extend(blocks)


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``run`` column: MLflow run name and config hash (tables never show run ids)."""
    out = df.copy()
    out["run"] = [run_label(r) for _, r in out.iterrows()] if len(out) else pd.Series(dtype=str)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _fig_link(report: Report, png: Path, out_dir: Path, caption: str) -> str:
    report.figures.append(png)
    return figure_link(png, out_dir, caption)


def _header(raw: pd.DataFrame, usable: pd.DataFrame, excluded: pd.DataFrame,
            experiment: str, sweep_id: str, tracking_uri: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "## About this analysis",
        "",
        f"- experiment: `{experiment}`; tracking store: `{tracking_uri}`",
        f"- generated: {now}; numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}, mlflow {mlflow.__version__}",
        f"- pretrain runs found: {len(raw)}; used: {len(usable)}; excluded: {len(excluded)}",
        "- loss = `eval/loss`, validation loss in nats/token at T = mu_rec",
    ])


def _excluded_section(excluded: pd.DataFrame) -> str:
    if excluded.empty:
        return "## Excluded runs\n\nNone: every run finished without divergence."
    counts = excluded["reason"].value_counts()
    summary = "; ".join(f"{n} × {reason}" for reason, n in counts.items())
    body = table(with_labels(excluded), ["run", "model_name", "mean_recurrence", "flop_budget", "status",
                                         "reason"])
    return (f"## Excluded runs\n\n{len(excluded)} run(s) excluded ({summary}). Only FINISHED, "
            f"non-diverged runs with a finite final loss enter the fits.\n\n{body}")


def _flop_check(df: pd.DataFrame) -> str | None:
    """Realised training FLOPs vs nominal budget: the fits use the nominal C."""
    sel = df[np.isfinite(df["flop_budget"].astype(float)) & np.isfinite(df["train_flops"])]
    if sel.empty:
        return None
    ratio = sel["train_flops"] / sel["flop_budget"].astype(float)
    return (f"Realised train FLOPs / nominal budget: {ratio.min():.3f}–{ratio.max():.3f} "
            "(fits use the nominal budget as C).")


def _powerlaw_rows(r: AxisResult) -> list[dict[str, object]]:
    rows = []
    for name, law in (("shape-free (Akima) — the estimate", r.law), ("parabola vertex", r.parabola)):
        if law is None:
            continue
        rows.append({
            "quantity": f"{LABEL[r.axis]} ∝ C^gamma", "optima": name,
            "gamma": fmt(law.gamma),
            "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs")),
            "95 % t-interval (OLS)": interval(*law.ci_gamma),
            "k": fmt(law.k), "R²": fmt(law.r2), "budgets used": len(law.C),
            "paper gamma": fmt(r.paper),
        })
    return rows


def _optima_section(r: AxisResult) -> str:
    t = isoflop.optima_table(r.optima)
    t["95 % (run bootstrap)"] = [interval(a, b) for a, b in zip(t["opt_lo"], t["opt_hi"])]
    t["parabola 95 %"] = [interval(a, b) for a, b in zip(t["parabola_lo"], t["parabola_hi"])]
    t["power law"] = ["used" if r.law is not None and b in set(r.law.C.tolist()) else "excluded"
                      for b in t["budget"]]
    cols = ["budget", "n_runs", "optimum", "95 % (run bootstrap)", "parabola_optimum", "parabola 95 %",
            "loss_at_opt", "curvature_t", "dof", "power law", "flags"]
    text = f"Per-budget optimum of {LABEL[r.axis]} (shape-free estimate, parabola beside it):\n\n" + table(t, cols)
    points = r.points_excluded()
    if points:
        pt = pd.DataFrame(points)
        text += (f"\n\nPoints left out of the fits ({len(points)}):\n\n"
                 + table(pt, ["C", r.axis, "loss", "run", "reason"]))
    notes = sorted({n for o in r.optima for n in o.notes})
    if notes:
        text += "\n\n" + "\n".join(f"Note: {n}." for n in notes)
    return text


def _axis_block(report: Report, r: AxisResult, name: str, out_dir: Path) -> list[str]:
    label, xlabel = LABEL[r.axis], XLABEL[r.axis]
    stem = out_dir / "figures" / f"isoflop_{_slug(name)}_{r.axis}"
    blocks = [f"#### {label}", _fig_link(report, plots.plot_isoflop(r.optima, xlabel, stem), out_dir,
                                         f"isoFLOP {name}: loss vs {xlabel}"),
              _optima_section(r)]
    for o in r.optima:
        for p in o.points_excluded:
            report.warnings.append(f"{name}: {label} at C={o.budget:.3g}: point {p['run_id']} "
                                   f"({p['value']:.4g}) left out: {p['code']}")
        if not o.ok:
            report.warnings.append(f"{name}: {label} at C={o.budget:.3g} left out of the power law: "
                                   + "; ".join(o.reasons))
    if r.law is None:
        blocks.append(f"**No power law for {label}**: {r.reason}.")
        return blocks
    blocks.append("Compute-optimal power law (ln y = ln k + gamma ln C):\n\n" + table(pd.DataFrame(_powerlaw_rows(r))))
    blocks += [f"**Bias note**: {n}." for n in r.notes]
    report.warnings += [f"{name}: {label} power law: {w}" for w in r.law.warnings + r.notes]
    key = f"{_slug(name)}.gamma_{r.axis}"
    report.metrics[key] = r.law.gamma
    lo, hi = r.law.boot_ci_gamma("runs")
    report.metrics[f"{key}_runs_lo"], report.metrics[f"{key}_runs_hi"] = lo, hi
    if r.parabola is not None:
        report.metrics[f"{key}_parabola"] = r.parabola.gamma
    pstem = out_dir / "figures" / f"powerlaw_{_slug(name)}_{r.axis}"
    blocks.append(_fig_link(report, plots.plot_powerlaw(r.law, r.optima, label, pstem), out_dir,
                            f"power law {name}: {label} vs C"))
    return blocks


def isoflop_group(report: Report, name: str, df: pd.DataFrame, out_dir: Path, opts: Options,
                  axes: tuple[str, ...], rng: np.random.Generator) -> None:
    """Approach 2 on every supported axis of one group of runs."""
    blocks = [f"### `{name}`"]
    check = _flop_check(df)
    if check:
        blocks.append(check)
    skipped = []
    df = with_labels(df)
    for axis in axes:
        supported, why = isoflop.isoflop_supported(df, axis)
        if not supported:
            skipped.append(f"{LABEL[axis]}: {why}")
            continue
        r = approach2(df, name, axis, opts, rng, looped="mean_recurrence" in axes)
        report.axes.append(r)
        if axis == "tokens":
            if r.law is not None:
                report.approach2[name] = r.law
            else:
                report.approach2_skipped[name] = f"no D* power law ({r.reason})"
        blocks += _axis_block(report, r, name, out_dir)
    if skipped and len(skipped) == len(axes):
        report.add(f"### `{name}`\n\nIsoFLOP analysis skipped: " + "; ".join(skipped) + ".")
        return
    blocks += [f"Not analysed: {s}." for s in skipped]
    mine = [r for r in report.axes if r.group == name]
    if mine:  # the Chinchilla-style figure of this model: isoFLOP curves beside optimum vs compute
        png = plots.plot_isoflop_summary([(r.optima, r.law, XLABEL[r.axis], LABEL[r.axis]) for r in mine],
                                         f"{name}: isoFLOP curves and compute-optimal power laws",
                                         out_dir / "figures" / f"chinchilla_{_slug(name)}")
        blocks.insert(1, _fig_link(report, png, out_dir, f"{name}: isoFLOP curves and compute-optimal laws"))
    report.add("\n\n".join(blocks))


def isoflop_intro(opts: Options) -> str:
    qc = isoflop_qc
    return (
        "## IsoFLOP analysis\n\n"
        "Per FLOP budget, the **estimate** of the optimum is the minimum of an Akima spline through the "
        "points (no shape assumed; replicate runs at one size averaged), with a 95 % **run-bootstrap** "
        f"interval ({opts.n_boot} resamples of the budget's runs, spline and minimum recomputed). A "
        "least-squares parabola in ln(size) sits beside it; its vertex is biased when the curve is "
        "asymmetric or the grid off-centre, and a bias note appears when its power law leaves the "
        "estimate's interval. Quality control (named flags, defined in docs/analysis.md): per point "
        f"`{qc.EXACT_DUPLICATE}`, `{qc.NEAR_DUPLICATE}` (< {qc.NEAR_DUPLICATE_STEPS:g} of the median grid "
        f"step), `{qc.OUTLIER}` (> {qc.OUTLIER_K:g} residual SDs from a robust smooth fit, with >= "
        f"{qc.MIN_SIZES_FOR_OUTLIERS} sizes); per budget `{qc.TOO_FEW}`, `{qc.EDGE_LOW}`/`{qc.EDGE_HIGH}`, `{qc.OFF_CENTRE}` (< "
        f"{qc.MIN_SIDE} sizes on one side of the optimum), `{qc.WEAK_CURVATURE}` (parabola curvature t "
        "below the t distribution's 97.5 % quantile for its dof), "
        f"`{qc.SINGLE_POINT}` (leaving one size out moves the minimum to the edge or fails the curvature "
        f"test), `{qc.DISAGREE}` (parabola and spline optima > {qc.DISAGREE_STEPS:g} grid steps apart). "
        + ("Flagged points and budgets are **kept** (--keep-flagged) and marked. " if opts.keep_flagged else
           "Flagged points and budgets are **left out** of the power law (--keep-flagged keeps them). ")
        + f"A power law needs >= {opts.min_budgets} clean budgets (--min-budgets); with fewer there is "
        "none, never a fit through flagged optima. Power-law intervals: the run bootstrap propagated "
        "through every budget's optimum, and the OLS t-interval (scatter of the optima about the line). "
        "The paper's exponents are shown for comparison only.")


def _isoflop_section(report: Report, usable: pd.DataFrame, out_dir: Path, opts: Options) -> None:
    report.add(isoflop_intro(opts))
    rng = np.random.default_rng(opts.seed)
    for name, grp in usable.groupby(["model_kind", "model_name"], sort=True, dropna=False):
        isoflop_group(report, " / ".join(str(n) for n in name), grp, out_dir, opts, SWEEP_AXES, rng)
    # Model sizes varied at fixed budgets and one µ_rec (a Chinchilla-style size sweep): N* across models.
    if usable["mean_recurrence"].nunique() <= 1 and isoflop.isoflop_supported(usable, "params")[0]:
        isoflop_group(report, "all models", usable, out_dir, opts, ("params",), rng)


def _stability_section(report: Report, raw: pd.DataFrame, out_dir: Path, tracking_uri: str) -> None:
    th = stability.Thresholds()
    hist = stability.histories(tracking_uri, raw["run_id"].astype(str).tolist())
    t = stability.stability_table(raw, hist, th)
    png = plots.plot_stability(t, hist, out_dir / "figures" / "stability")
    counts = t.groupby("injection")["outcome"].value_counts().unstack(fill_value=0)
    for key, value in counts.stack().items():
        report.metrics[f"stability.{key[0]}.{key[1]}"] = float(value)
    names = with_labels(raw).set_index(raw["run_id"].astype(str))["run"]
    detail = t.assign(run=t["run_id"].astype(str).map(names))
    report.add(
        "## Stability\n\n"
        f"Outcome per injection and learning rate ({stability.SYMBOL['converged']} converged, "
        f"{stability.SYMBOL['spiky']} loss spikes, {stability.SYMBOL['exploded']} state norm exploded, "
        f"{stability.SYMBOL['diverged']} diverged). A spike is a rise of the training loss above "
        f"{1 + th.spike_rel:g}× its running minimum after the first {th.warmup_fraction:.0%} of training "
        f"and {1 + th.spike_rel / 2:g}× the sweep's median loss at that step (all runs see the same batches, "
        "so a hard batch is not a spike); "
        f"an explosion is a growth of the recurrent state norm by more than {th.explode_factor:g}×; "
        "divergence is a non-finite loss (the run is stopped and tagged `diverged`). Diverged runs are "
        "kept here although the fits exclude them.\n\n"
        + table(stability.outcome_grid(t)) + "\n\n"
        + table(detail, ["run", "injection", "lr", "mean_recurrence", "outcome", "spikes",
                         "state_growth", "max_state_norm", "max_rho_A", "steps_logged", "final_loss"]) + "\n\n"
        + _fig_link(report, png, out_dir, "loss, state norm and ρ(Ā) over training"))


def _loss_by_loops(usable: pd.DataFrame) -> str:
    """The measured losses at every test-time loop count, and the gain from looping at test time."""
    t_cols = testtime_columns(usable)
    ts = sorted(int(c.split("T")[1]) for c in t_cols)
    df = with_labels(usable.sort_values(["mean_recurrence", "flop_budget", "tokens"]))
    first = df[f"loss_T{ts[0]}"]
    df[f"gain T{ts[0]}→mu (%)"] = 100 * (first - df["loss"]) / first
    cols = ["run", "mean_recurrence", "flop_budget", "tokens", *(f"loss_T{t}" for t in ts),
            f"gain T{ts[0]}→mu (%)"]
    looped = df[df["mean_recurrence"] >= 4]
    gains = looped[f"gain T{ts[0]}→mu (%)"]
    summary = ""
    if len(looped):
        summary = (f"Models trained with mu_rec >= 4: the loss at T = mu_rec is below the loss at "
                   f"T = {ts[0]} for {int((gains > 0).sum())} of {len(looped)} runs "
                   f"(gain {gains.min():.2f} % to {gains.max():.2f} %).\n\n")
    return ("Measured validation loss at each test-time loop count T (gain: relative drop from the "
            f"first T to T = mu_rec).\n\n{summary}" + table(df, cols))


def _testtime_section(report: Report, usable: pd.DataFrame, out_dir: Path) -> None:
    head = "## Test-time looping\n\n"
    if not testtime_columns(usable):
        report.add(head + "Skipped: no `eval/loss_T*` metrics logged.")
        return
    fits = fit_testtime_runs(usable)
    if not fits:
        report.add(head + "Skipped: no run has test-time losses at >= 3 values of T.")
        return
    report.testtime = testtime_entries(usable, fits)
    t = tabulate_testtime(usable, fits)
    names = with_labels(usable).set_index(usable["run_id"].astype(str))["run"]
    t["run"] = t["run_id"].map(names)
    t["huber (×1e-7)"] = t["huber"] * 1e7
    cols = ["run", "model_name", "mean_recurrence", "n_T", "L_inf", "se_L_inf", "Z", "z",
            "se_z", "r2", "huber (×1e-7)", "loss_at_mu", "gap_pct", "z_identified", "T_star", "flags"]
    ident = t["z_identified"].astype(bool)
    # one warning per set of flags, naming its runs: a sweep's curves mostly fail for the same reason,
    # and one line per run buried the report's other warnings under a dozen near-identical ones
    for flags, runs in t[~ident].groupby("flags", sort=False)["run"]:
        report.warnings.append(f"test-time fit not identified for {len(runs)} of {len(t)} runs: {flags} — "
                               + ", ".join(sorted(runs)))
    summary = "No curve has an identified decay rate."
    if ident.any():
        gaps = t.loc[ident, "gap_pct"].abs()
        summary = (f"|L_inf − L(T=mu_rec)| / L(T=mu_rec) over {int(ident.sum())} identified "
                   f"curves: mean {gaps.mean():.3f} %, max {gaps.max():.3f} %.")
    png = plots.plot_testtime(usable, fits, out_dir / "figures" / "testtime")
    report.add(head + _loss_by_loops(usable) + "\n\n" + (
        "### Fits of the test-time law\n\n"
        "Per run, L(T) = L_inf + Z·exp(−z·T) fitted by bounded least squares on **log-loss** "
        "(z in [1e-3, 20], Z >= 0, 16 starts over z). SEs from the Jacobian (no SE with 3 "
        "points). A curve with no more values of T than the law's 3 parameters is an exact fit and is "
        "never called identified. T_star, the saturation point, is where the fitted decay Z·exp(−z·T) "
        f"has fallen to {100 * SATURATION_REL:g} % of L_inf. Huber is the mean Huber(δ={HUBER_DELTA:g}) of log residuals. gap_pct = "
        "100·(L_inf − L(T=mu_rec))/L(T=mu_rec) with L(T=mu_rec) = eval/loss.\n\n"
        + summary + "\n\n" + table(t, cols) + "\n\n"
        + _fig_link(report, png, out_dir, "test-time loss vs T") + "\n\n"
        + "### Test-time law forms (Parcae Table 12 protocol)\n\n"
        "Per run, each form fitted by least squares on log-loss; score = mean Huber(δ=1e-3) "
        "of log residuals ×1e-7, averaged over runs with >= 4 values of T. Extrapolated: "
        "fitted on T <= mu_rec (>= 3 values), scored on T > mu_rec.\n\n"
        + table(compare_forms(usable))))


def _approaches_section(report: Report, results) -> None:
    head = "## Approach 2 vs Approach 3\n\n"
    head += "".join(f"Not compared for `{g}`: {why}.\n\n" for g, why in report.approach2_skipped.items())
    if not report.approach2 or not results:
        report.add(head + "Skipped: needs both an isoFLOP power law for D* from clean budgets and a "
                          "parametric law fit.")
        return
    t, warnings = compare_approaches(report.approach2, results)
    if t.empty:
        report.add(head + "Skipped: no fitted law has an allocation exponent b_opt.")
        return
    report.warnings += warnings
    t["Approach 2 95 % (runs bootstrap)"] = [interval(a, b) for a, b in zip(t["A2 lo"], t["A2 hi"])]
    t["Approach 3 95 % (runs bootstrap)"] = [interval(a, b) for a, b in zip(t["A3 lo"], t["A3 hi"])]
    for _, r in t.iterrows():
        report.metrics[f"approaches.{_slug(r['isoFLOP group'])}.{r['law']}.difference"] = r["difference"]
    cols = ["isoFLOP group", "law", "Approach 2: gamma_D", "Approach 2 95 % (runs bootstrap)",
            "Approach 3: b_opt", "Approach 3 95 % (runs bootstrap)", "difference", "basis", "agree"]
    report.add(head + "The tokens exponent of the compute-optimal allocation, D* ∝ C^gamma, from the "
               "isoFLOP optima (Approach 2) and from the parametric law's own compute model, b_opt "
               "(Approach 3; see the parametric law section), "
               "on the same runs. They agree when their 95 % intervals overlap (or, without intervals, "
               "differ by at most 0.1). Approach 2 is per model family; the law pools all runs.\n\n"
               + table(t, cols))


def _scaling_plots_section(report: Report, usable: pd.DataFrame, out_dir: Path) -> None:
    blocks = ["## Loss vs scale"]
    candidates = [("tokens", "training tokens D"), ("train_flops", "training FLOPs"),
                  ("n_params", "parameters"), ("n_params_unrolled", "unrolled parameters")]
    for col, label in candidates:
        values = usable[col].astype(float)
        if values.notna().sum() >= 2 and values.nunique() >= 2:
            png = plots.plot_loss_vs(usable, col, label, out_dir / "figures" / f"loss_vs_{col}")
            blocks.append(_fig_link(report, png, out_dir, f"loss vs {label}"))
    if len(blocks) == 1:
        blocks.append("Skipped: tokens, FLOPs and parameter counts do not vary across runs.")
    elif not report.laws and usable["n_params"].nunique() >= 2 and usable["tokens"].nunique() >= 2:
        blocks.insert(1, "Model sizes and token counts both vary (ladder-style sweep); points "
                         "only, no parametric L(N, D) fit is made here.")
    report.add("\n\n".join(blocks))


def _runs_section(usable: pd.DataFrame) -> str:
    cols = ["run", "model_name", "model_kind", "mean_recurrence", "mean_backprop",
            "flop_budget", "tokens", "n_params", "n_params_unrolled", "train_flops", "loss"]
    t = with_labels(usable.sort_values(["model_name", "flop_budget", "mean_recurrence"]))
    return f"## Runs used ({len(t)})\n\n" + table(t, [c for c in cols if c in t])


def _warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return "## Warnings\n\nNone."
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings)


def finish_report(report: Report, out_dir: Path, title: str, n_used: int, excluded_reasons,
                  source: dict) -> tuple[Path, dict]:
    """Headline first (right under the title), warnings next, then the details; writes report.md and
    summary.json (the same headline in both) and returns (report path, summary)."""
    summary = build_summary(report.axes, report.laws, report.testtime,
                            runs_entry(n_used, excluded_reasons), source)
    report.sections.insert(0, title)
    report.sections.insert(1, headline_markdown(summary["headline"]))
    report.sections.insert(3, _warnings_section(report.warnings))  # after the metadata block
    path = out_dir / "report.md"
    path.write_text("\n\n".join(report.sections) + "\n", encoding="utf-8")
    write_summary(summary, out_dir)
    return path, summary


def _log_to_mlflow(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path,
                   report: Report, n_used: int, headline: list[str]) -> str:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    # The headline is the run's description in the UI (MLflow shows the mlflow.note.content tag).
    tags = {"run_kind": "analysis", "sweep_id": sweep_id, "analysis.n_runs_used": str(n_used),
            "mlflow.note.content": headline_markdown(headline)}
    parents = _sweep_parents(client, exp.experiment_id, sweep_id)
    if parents:  # nested under the sweep's parent run in the UI, beside the jobs it analysed
        tags["mlflow.parentRunId"] = parents[0].info.run_id
    run = client.create_run(exp.experiment_id, run_name=f"analysis-{sweep_id}", tags=tags)
    run_id = run.info.run_id
    try:
        for key, value in report.metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, key, float(value))
        client.log_artifact(run_id, str(out_dir / "report.md"))
        client.log_artifact(run_id, str(out_dir / "summary.json"))
        for fig in sorted((out_dir / "figures").glob("*")):
            client.log_artifact(run_id, str(fig), artifact_path="figures")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


FINGERPRINT = "inputs.sha256"


def _fingerprint(raw: pd.DataFrame, experiment: str, sweep_id: str, opts: Options) -> str:
    """What a report depends on: the sweep's runs and their results, the settings, the analysis code."""
    digest = hashlib.sha256(f"{experiment}|{sweep_id}|{opts}".encode())
    cols = ["run_id", "status", "diverged", "loss", *testtime_columns(raw)]
    digest.update(raw[cols].sort_values("run_id").to_csv(index=False).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _sweep_parents(client: MlflowClient, experiment_id: str, sweep_id: str) -> list:
    """The sweep's parent run as a one-element list (the analysis stays free of experiments/ and torch)."""
    return client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.run_kind = 'sweep'",
                              max_results=1)


def _adaptive_section(tracking_uri: str, experiment: str, sweep_id: str) -> str | None:
    """The points the sweep driver added beyond edge optima (experiments.launch.adaptive), and why."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    parents = _sweep_parents(client, exp.experiment_id, sweep_id) if exp else []
    added = json.loads(parents[0].data.tags.get("sweep.adaptive", "[]")) if parents else []
    if not added:
        return None
    rows = "\n".join(f"| {e['flop_budget']:.3g} | {e['mean_recurrence']} | {e['reason']} |" for e in added)
    return ("## Points added by adaptive bracketing\n\nAfter the grid's pass the driver added these µ_rec values "
            "beyond optima on the grid's edge (`sweep.adaptive`); each is an ordinary run of the sweep.\n\n"
            "| C (FLOPs) | µ_rec | why |\n|---|---|---|\n" + rows)


def analyze(tracking_uri: str, experiment: str, sweep_id: str, out_dir: str | Path,
            log_to_mlflow: bool = True, n_boot: int = 1000, seed: int = 0, reuse: bool = False,
            opts: Options | None = None) -> Path:
    """Analyse one sweep; returns the path of the written report.md (summary.json beside it).

    opts: analysis settings (n_boot and seed are the short form of them).
    reuse: when the report in out_dir was made from exactly these runs, settings and analysis code,
    return it without refitting (a re-run sweep that trained nothing then costs seconds, not minutes).
    """
    opts = opts or Options(n_boot=n_boot, seed=seed)
    out_dir = Path(out_dir)
    with stage("loading runs"):
        raw = load_runs(tracking_uri, experiment, sweep_id)
    fingerprint = _fingerprint(raw, experiment, sweep_id, opts)
    stamp = out_dir / FINGERPRINT
    if reuse and (out_dir / "report.md").exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return out_dir / "report.md"
    workers.pool()  # the fits' worker processes start now and import while the isoFLOP stage runs
    usable, excluded = split_usable(raw)
    if usable.empty:
        reasons = ", ".join(excluded["reason"].value_counts().index) if len(excluded) else "none"
        raise NoRunsError(f"sweep {sweep_id!r} in experiment {experiment!r} has no finished "
                          f"runs ({len(raw)} pretrain runs found; exclusion reasons: {reasons})")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    report = Report()
    report.add(_header(raw, usable, excluded, experiment, sweep_id, tracking_uri))
    report.add(_excluded_section(excluded))
    adaptive = _adaptive_section(tracking_uri, experiment, sweep_id)
    if adaptive:
        report.add(adaptive)
    if stability.stability_supported(raw):
        with stage("stability"):
            _stability_section(report, raw, out_dir, tracking_uri)
    with stage("isoFLOP (fits, bootstrap, figures)"):
        _isoflop_section(report, usable, out_dir, opts)
    with stage("test-time (fits, figures)"):
        _testtime_section(report, usable, out_dir)
    labels = with_labels(usable).set_index(usable["run_id"].astype(str))["run"].to_dict()
    with stage("laws (fits; each bootstrap has its own bar)"):
        report.laws = (fit_sweep_laws(usable, opts.n_boot, opts.seed, labels)
                       if law_supported(usable)[0] else [])
    with stage("laws (report, figures)"):
        report.add(law_section(usable, opts.n_boot, opts.seed, report.warnings, report.metrics, out_dir,
                               report.laws))
        _approaches_section(report, report.laws)
    with stage("plots (loss vs scale)"):
        _scaling_plots_section(report, usable, out_dir)
    report.add(_runs_section(usable))
    path, summary = finish_report(report, out_dir, f"# Sweep analysis: `{sweep_id}`", len(usable),
                                  excluded["reason"].tolist(),
                                  {"kind": "mlflow", "tracking_uri": tracking_uri,
                                   "experiment": experiment, "sweep_id": sweep_id})
    if log_to_mlflow:
        _log_to_mlflow(tracking_uri, experiment, sweep_id, out_dir, report, len(usable), summary["headline"])
    stamp.write_text(fingerprint)
    return path
