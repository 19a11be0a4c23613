"""End-to-end sweep analysis: load runs, run every analysis the data supports,
write ``report.md`` with figures, and log the bundle to MLflow as an
``run_kind=analysis`` run.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import scipy

from analysis import isoflop, plots, stability
from analysis.approaches import compare_approaches
from analysis.lawreport import fit_sweep_laws, law_section, law_supported
from analysis.testtime_forms import compare_forms
from analysis.markdown import figure_link, fmt, interval, table
from analysis.powerlaw import PowerLawFit, powerlaw_from_optima
from analysis.runs import load_runs, split_usable, testtime_columns
from analysis.testtime import HUBER_DELTA, fit_testtime_runs, tabulate_testtime
from mlflow.tracking import MlflowClient

# Published exponents (Parcae, Prairie et al. 2026, section 5.2), shown only
# beside our fits for comparison; nothing is fitted towards them.
PAPER_GAMMA = {"mean_recurrence": 0.40, "tokens": 0.78}
AXES = {"mean_recurrence": ("mu_rec*", "mean recurrence mu_rec"),
        "tokens": ("D*", "training tokens D")}


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

    def add(self, *blocks: str) -> None:
        self.sections.extend(blocks)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _fig_link(report: Report, png: Path, out_dir: Path, caption: str) -> str:
    report.figures.append(png)
    return figure_link(png, out_dir, caption)


def _header(raw: pd.DataFrame, usable: pd.DataFrame, excluded: pd.DataFrame,
            experiment: str, sweep_id: str, tracking_uri: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"# Sweep analysis: `{sweep_id}`",
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
    body = table(excluded.assign(run_id=excluded["run_id"].str[:12]),
                 ["run_id", "model_name", "mean_recurrence", "flop_budget", "status", "reason"])
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


def _powerlaw_row(label: str, axis: str, law: PowerLawFit) -> dict[str, object]:
    return {
        "quantity": f"{label} ∝ C^gamma",
        "gamma": fmt(law.gamma),
        "SE (OLS)": fmt(law.se_gamma, 2),
        "95 % t-interval": interval(*law.ci_gamma),
        "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs")),
        "95 % bootstrap (residuals)": interval(*law.boot_ci_gamma("residuals")),
        "k": fmt(law.k),
        "R²": fmt(law.r2),
        "budgets used": len(law.C),
        "paper gamma": fmt(PAPER_GAMMA[axis]),
    }


def _optima_section(label: str, opt: list[isoflop.BudgetOptimum]) -> str:
    t = isoflop.optima_table(opt)
    t["delta-method 95 %"] = [interval(a, b) for a, b in zip(t["delta_lo"], t["delta_hi"])]
    t["bootstrap (runs) 95 %"] = [interval(a, b) for a, b in zip(t["boot_lo"], t["boot_hi"])]
    t["bootstrap (residuals) 95 %"] = [interval(a, b)
                                       for a, b in zip(t["resid_lo"], t["resid_hi"])]
    cols = ["budget", "n_runs", "optimum", "akima_optimum", "delta-method 95 %", "bootstrap (runs) 95 %",
            "bootstrap (residuals) 95 %",
            "loss_at_opt", "curvature", "r2", "flags"]
    return f"Per-budget optimum of {label}:\n\n" + table(t, cols)


def _isoflop_group(report: Report, name: str, df: pd.DataFrame, out_dir: Path,
                   n_boot: int, rng: np.random.Generator) -> None:
    supported, why = isoflop.isoflop_supported(df)
    if not supported:
        report.add(f"### `{name}`\n\nIsoFLOP analysis skipped: {why}.")
        return
    blocks = [f"### `{name}`", f"Data: {why}."]
    check = _flop_check(df)
    if check:
        blocks.append(check)
    law_rows = []
    for axis, (label, xlabel) in AXES.items():
        opt = isoflop.isoflop_optima(df, axis, n_boot=n_boot, rng=rng)
        stem = out_dir / "figures" / f"isoflop_{_slug(name)}_{axis}"
        blocks.append(_fig_link(report, plots.plot_isoflop(opt, xlabel, stem), out_dir,
                                f"isoFLOP {name}: loss vs {xlabel}"))
        blocks.append(_optima_section(label, opt))
        for o in opt:
            if not o.fit.ok:
                report.warnings.append(f"{name}: {label} at C={o.budget:.3g}: "
                                       + "; ".join(o.fit.flags))
        fitted = [o for o in opt if np.isfinite(o.fit.x_opt)]
        if len({o.budget for o in fitted}) < 2:
            blocks.append(f"No power law for {label}: fewer than 2 budgets.")
            continue
        law = powerlaw_from_optima(fitted)
        if axis == "tokens":
            interior = sum(o.fit.ok for o in fitted)
            if interior >= 2:
                report.approach2[name] = law
            else:  # a line through grid edges measures the grid, not the optimum
                report.approach2_skipped[name] = (f"only {interior} budget(s) with an interior, "
                                                  "well-curved D* optimum")
        law_rows.append(_powerlaw_row(label, axis, law))
        report.warnings += [f"{name}: {label} power law: {w}" for w in law.warnings]
        key = f"{_slug(name)}.gamma_{axis}"
        report.metrics[key] = law.gamma
        for method in law.boot:
            lo, hi = law.boot_ci_gamma(method)
            report.metrics[f"{key}_{method}_lo"], report.metrics[f"{key}_{method}_hi"] = lo, hi
        pstem = out_dir / "figures" / f"powerlaw_{_slug(name)}_{axis}"
        blocks.append(_fig_link(report, plots.plot_powerlaw(law, opt, label, pstem), out_dir,
                                f"power law {name}: {label} vs C"))
    if law_rows:
        blocks.insert(2, "Compute-optimal power laws (ln y = ln k + gamma ln C):\n\n"
                      + table(pd.DataFrame(law_rows)))
    report.add("\n\n".join(blocks))


def _isoflop_section(report: Report, usable: pd.DataFrame, out_dir: Path,
                     n_boot: int, seed: int) -> None:
    report.add(
        "## IsoFLOP analysis\n\n"
        "Per FLOP budget a least-squares parabola of loss vs ln(mu_rec), and separately vs "
        "ln(tokens); the vertex is the optimum. Beside it, the minimum of an Akima spline through "
        "the points (`akima_optimum`, no shape assumed; replicates averaged); the two are flagged "
        "when they differ by more than a quarter of the grid. Other flags: off-centre grid "
        "(optimum in the outer fifth of the sampled range: extend the grid on that side), weak "
        "curvature (the parabola rises less across the grid than the points scatter about it: "
        "the vertex is set by noise; left out of the power law). An optimum beyond the sampled grid is reported "
        "as the grid edge and flagged (never extrapolated); flagged budgets are left out of the "
        "power law. Intervals (95 %): *delta method* on the parabola coefficients (needs >= 4 "
        f"runs); *bootstrap (runs)*: {n_boot} resamples of the runs within each budget, parabolas "
        "and power law refitted per resample, percentiles (conservative with few runs per budget: "
        "a resample can lose the grid ends and its optimum is then clipped to the narrower grid); "
        f"*bootstrap (residuals)*: {n_boot} resamples of parabola residuals on the fixed grid "
        "(needs >= 4 runs per budget). The power-law t-interval reflects only the scatter of the "
        "optima about the line. The paper's exponents are shown for "
        "comparison only.")
    rng = np.random.default_rng(seed)
    for name, grp in usable.groupby(["model_kind", "model_name"], sort=True, dropna=False):
        _isoflop_group(report, " / ".join(str(n) for n in name), grp, out_dir, n_boot, rng)


def _stability_section(report: Report, raw: pd.DataFrame, out_dir: Path, tracking_uri: str) -> None:
    th = stability.Thresholds()
    hist = stability.histories(tracking_uri, raw["run_id"].astype(str).tolist())
    t = stability.stability_table(raw, hist, th)
    png = plots.plot_stability(t, hist, out_dir / "figures" / "stability")
    counts = t.groupby("injection")["outcome"].value_counts().unstack(fill_value=0)
    for key, value in counts.stack().items():
        report.metrics[f"stability.{key[0]}.{key[1]}"] = float(value)
    detail = t.assign(run_id=t["run_id"].astype(str).str[:12])
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
        + table(detail, ["run_id", "injection", "lr", "mean_recurrence", "outcome", "spikes",
                         "state_growth", "max_state_norm", "max_rho_A", "steps_logged", "final_loss"]) + "\n\n"
        + _fig_link(report, png, out_dir, "loss, state norm and ρ(Ā) over training"))


def _loss_by_loops(usable: pd.DataFrame) -> str:
    """The measured losses at every test-time loop count, and the gain from looping at test time."""
    t_cols = testtime_columns(usable)
    ts = sorted(int(c.split("T")[1]) for c in t_cols)
    df = usable.sort_values(["mean_recurrence", "flop_budget", "tokens"]).copy()
    df["run_id"] = df["run_id"].astype(str).str[:12]
    first = df[f"loss_T{ts[0]}"]
    df[f"gain T{ts[0]}→mu (%)"] = 100 * (first - df["loss"]) / first
    cols = ["run_id", "mean_recurrence", "flop_budget", "tokens", *(f"loss_T{t}" for t in ts),
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
    t = tabulate_testtime(usable, fits)
    t["run_id"] = t["run_id"].str[:12]
    t["huber (×1e-7)"] = t["huber"] * 1e7
    cols = ["run_id", "model_name", "mean_recurrence", "n_T", "L_inf", "se_L_inf", "Z", "z",
            "se_z", "r2", "huber (×1e-7)", "loss_at_mu", "gap_pct", "z_identified", "flags"]
    ident = t["z_identified"].astype(bool)
    for _, r in t[~ident].iterrows():
        report.warnings.append(f"test-time fit {r['run_id']}: {r['flags']}")
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
        f"points). Huber is the mean Huber(δ={HUBER_DELTA:g}) of log residuals. gap_pct = "
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
    head += "".join(f"Not compared for `{g}`: {why}, so its D* power law is not an estimate of the "
                    "optimum.\n\n" for g, why in report.approach2_skipped.items())
    if not report.approach2 or not results:
        report.add(head + "Skipped: needs both an isoFLOP power law for D* from interior optima and a "
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
               "isoFLOP optima (Approach 2) and from the parametric law, b_opt = α/(α+β) (Approach 3), "
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
    elif usable["n_params"].nunique() >= 2 and usable["tokens"].nunique() >= 2:
        blocks.insert(1, "Model sizes and token counts both vary (ladder-style sweep); points "
                         "only, no parametric L(N, D) fit is made here.")
    report.add("\n\n".join(blocks))


def _runs_section(usable: pd.DataFrame) -> str:
    cols = ["run_id", "model_name", "model_kind", "mean_recurrence", "mean_backprop",
            "flop_budget", "tokens", "n_params", "n_params_unrolled", "train_flops", "loss"]
    t = usable.sort_values(["model_name", "flop_budget", "mean_recurrence"])
    return f"## Runs used ({len(t)})\n\n" + table(t, cols)


def _warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return "## Warnings\n\nNone."
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings)


def _log_to_mlflow(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path,
                   report: Report, n_used: int) -> str:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    tags = {"run_kind": "analysis", "sweep_id": sweep_id, "analysis.n_runs_used": str(n_used)}
    parents = client.search_runs([exp.experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.run_kind = 'sweep'",
                                 max_results=1)
    if parents:  # nested under the sweep's parent run in the UI, beside the jobs it analysed
        tags["mlflow.parentRunId"] = parents[0].info.run_id
    run = client.create_run(exp.experiment_id, run_name=f"analysis-{sweep_id}", tags=tags)
    run_id = run.info.run_id
    try:
        for key, value in report.metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, key, float(value))
        client.log_artifact(run_id, str(out_dir / "report.md"))
        for fig in sorted((out_dir / "figures").glob("*")):
            client.log_artifact(run_id, str(fig), artifact_path="figures")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


FINGERPRINT = "inputs.sha256"


def _fingerprint(raw: pd.DataFrame, experiment: str, sweep_id: str, n_boot: int, seed: int) -> str:
    """What a report depends on: the sweep's runs and their results, the settings, the analysis code."""
    digest = hashlib.sha256(f"{experiment}|{sweep_id}|{n_boot}|{seed}".encode())
    cols = ["run_id", "status", "diverged", "loss", *testtime_columns(raw)]
    digest.update(raw[cols].sort_values("run_id").to_csv(index=False).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def analyze(tracking_uri: str, experiment: str, sweep_id: str, out_dir: str | Path,
            log_to_mlflow: bool = True, n_boot: int = 1000, seed: int = 0, reuse: bool = False) -> Path:
    """Analyse one sweep; returns the path of the written report.md.

    reuse: when the report in out_dir was made from exactly these runs, settings and analysis code,
    return it without refitting (a re-run sweep that trained nothing then costs seconds, not minutes).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = load_runs(tracking_uri, experiment, sweep_id)
    fingerprint = _fingerprint(raw, experiment, sweep_id, n_boot, seed)
    stamp = out_dir / FINGERPRINT
    if reuse and (out_dir / "report.md").exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return out_dir / "report.md"
    stamp.unlink(missing_ok=True)
    usable, excluded = split_usable(raw)
    if usable.empty:
        reasons = ", ".join(excluded["reason"].value_counts().index) if len(excluded) else "none"
        raise NoRunsError(f"sweep {sweep_id!r} in experiment {experiment!r} has no finished "
                          f"runs ({len(raw)} pretrain runs found; exclusion reasons: {reasons})")
    report = Report()
    report.add(_header(raw, usable, excluded, experiment, sweep_id, tracking_uri))
    report.add(_excluded_section(excluded))
    if stability.stability_supported(raw):
        _stability_section(report, raw, out_dir, tracking_uri)
    _isoflop_section(report, usable, out_dir, n_boot, seed)
    _testtime_section(report, usable, out_dir)
    results = fit_sweep_laws(usable, n_boot, seed) if law_supported(usable)[0] else []
    report.add(law_section(usable, n_boot, seed, report.warnings, report.metrics, out_dir, results))
    _approaches_section(report, results)
    _scaling_plots_section(report, usable, out_dir)
    report.add(_runs_section(usable))
    # Warnings go right after the header so they are read before the numbers.
    report.sections.insert(1, _warnings_section(report.warnings))
    path = out_dir / "report.md"
    path.write_text("\n\n".join(report.sections) + "\n", encoding="utf-8")
    if log_to_mlflow:
        _log_to_mlflow(tracking_uri, experiment, sweep_id, out_dir, report, len(usable))
    stamp.write_text(fingerprint)
    return path
