"""The other sections of a report: excluded runs, points added by adaptive bracketing, stability,
test-time looping, Approach 2 against Approach 3, loss against scale, and the runs used. Each is drawn
from computed results (analysis.results); nothing is fitted here."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import stability
from analysis.estimation import HUBER_DELTA
from analysis.report import figures
from analysis.report.document import with_labels
from analysis.report.markdown import figure_link, fmt, interval, table
from analysis.results import Results, Stability, TestTime
from analysis.runs import testtime_columns
from analysis.testtime.saturation import SATURATION_REL, tabulate_testtime


# A standard error above this (of a loss or a rate) is a flat direction of the fit, not a measurement.
MAX_SE = 1e6


def excluded_section(excluded: pd.DataFrame) -> str:
    if excluded.empty:
        return "## Excluded runs\n\nNone: every run finished without divergence."
    counts = excluded["reason"].value_counts()
    summary = "; ".join(f"{n} × {reason}" for reason, n in counts.items())
    body = table(with_labels(excluded), ["run", "model_name", "mean_recurrence", "flop_budget", "status",
                                         "reason"])
    return (f"## Excluded runs\n\n{len(excluded)} run(s) excluded ({summary}). Only FINISHED, "
            f"non-diverged runs with a finite final loss enter the fits.\n\n{body}")


def adaptive_markdown(added: list[dict]) -> str | None:
    """The points the sweep driver added beyond edge optima (experiments.launch.adaptive), and why."""
    if not added:
        return None
    rows = "\n".join(f"| {e['flop_budget']:.3g} | {e['mean_recurrence']} | {e['reason']} |" for e in added)
    return ("## Points added by adaptive bracketing\n\nAfter the grid's pass the driver added these µ_rec values "
            "beyond optima on the grid's edge (`sweep.adaptive`); each is an ordinary run of the sweep.\n\n"
            "| C (FLOPs) | µ_rec | why |\n|---|---|---|\n" + rows)


def adaptive_section(tracking_uri: str, experiment: str, sweep_id: str) -> str | None:
    """adaptive_markdown of the points read from the sweep's parent run in MLflow."""
    from analysis.runs.store import adaptive_points

    return adaptive_markdown(adaptive_points(tracking_uri, experiment, sweep_id))


def stability_section(stab: Stability, raw: pd.DataFrame, out_dir: Path) -> str:
    th, t, hist = stab.thresholds, stab.table, stab.histories
    png = figures.plot_stability(t, hist, out_dir / "figures" / "stability")
    names = with_labels(raw).set_index(raw["run_id"].astype(str))["run"]
    detail = t.assign(run=t["run_id"].astype(str).map(names))
    return (
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
        + figure_link(png, out_dir, "loss, state norm and ρ(Ā) over training"))


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


def testtime_section(tt: TestTime, usable: pd.DataFrame, out_dir: Path) -> str:
    head = "## Test-time looping\n\n"
    if tt.reason:
        return head + f"Skipped: {tt.reason}."
    fits = tt.fits
    # ordered by µ_rec, then budget; a standard error or r² that says nothing is written as such
    t = tabulate_testtime(usable, fits).sort_values(["mean_recurrence", "flop_budget"], kind="stable")
    names = with_labels(usable).set_index(usable["run_id"].astype(str))["run"]
    t["run"] = t["run_id"].map(names)
    t["huber (×1e-7)"] = t["huber"] * 1e7
    shown = {c: (lambda v: "not identified" if abs(float(v)) > MAX_SE else fmt(v))
             for c in ("se_L_inf", "se_z")}
    shown["r2"] = lambda v: fmt(v) if not float(v) < 0 else "not identified"
    cols = ["run", "model_name", "mean_recurrence", "flop_budget", "n_T", "L_inf", "se_L_inf", "Z", "z",
            "se_z", "r2", "huber (×1e-7)", "loss_at_mu", "gap_pct", "z_identified", "T_star", "flags"]
    ident = t["z_identified"].astype(bool)
    summary = "No curve has an identified decay rate."
    if ident.any():
        gaps = t.loc[ident, "gap_pct"].abs()
        summary = (f"|L_inf − L(T=mu_rec)| / L(T=mu_rec) over {int(ident.sum())} identified "
                   f"curves: mean {gaps.mean():.3f} %, max {gaps.max():.3f} %.")
    png = figures.plot_testtime(usable, fits, out_dir / "figures" / "testtime")
    return (head + _loss_by_loops(usable) + "\n\n" + (
        "### Fits of the test-time law\n\n"
        "Per run, L(T) = L_inf + Z·exp(−z·T) fitted by bounded least squares on **log-loss** "
        "(z in [1e-3, 20], Z >= 0, 16 starts over z). SEs from the Jacobian (no SE with 3 "
        "points). A curve with no more values of T than the law's 3 parameters is an exact fit and is "
        "never called identified. T_star, the saturation point, is where the fitted decay Z·exp(−z·T) "
        f"has fallen to {100 * SATURATION_REL:g} % of L_inf. Huber is the mean Huber(δ={HUBER_DELTA:g}) of log residuals. gap_pct = "
        "100·(L_inf − L(T=mu_rec))/L(T=mu_rec) with L(T=mu_rec) = eval/loss.\n\n"
        + summary + "\n\n" + table(t, cols, shown) + "\n\n"
        + figure_link(png, out_dir, "test-time loss vs T") + "\n\n"
        + "### Test-time law forms (Parcae Table 12 protocol)\n\n"
        f"Per run, each form fitted by least squares on log-loss; score = mean Huber(δ={HUBER_DELTA:g}) "
        "of log residuals ×1e-7, averaged over runs with >= 4 values of T. Extrapolated: "
        "fitted on T <= mu_rec (>= 3 values), scored on T > mu_rec.\n\n"
        + table(tt.forms)))


def approaches_section(res: Results) -> str:
    head = "## Approach 2 vs Approach 3\n\n"
    head += "".join(f"Not compared for `{g}`: {why}.\n\n" for g, why in res.approach2_skipped.items())
    if not res.approach2 or not res.laws:
        return head + ("Skipped: needs both an isoFLOP power law for D* from clean budgets and a "
                       "parametric law fit.")
    t = res.approaches.copy()
    if t.empty:
        return head + "Skipped: no fitted law has an allocation exponent b_opt."
    t["Approach 2 95 % (runs bootstrap)"] = [interval(a, b) for a, b in zip(t["A2 lo"], t["A2 hi"])]
    t["Approach 3 95 % (runs bootstrap)"] = [interval(a, b) for a, b in zip(t["A3 lo"], t["A3 hi"])]
    cols = ["isoFLOP group", "law", "Approach 2: gamma_D", "Approach 2 95 % (runs bootstrap)",
            "Approach 3: b_opt", "Approach 3 95 % (runs bootstrap)", "difference", "basis", "agree"]
    return (head + "The tokens exponent of the compute-optimal allocation, D* ∝ C^gamma, from the "
            "isoFLOP optima (Approach 2) and from the parametric law's own compute model, b_opt "
            "(Approach 3; see the parametric law section), "
            "on the same runs. They agree when their 95 % intervals overlap (or, without intervals, "
            "differ by at most 0.1). Approach 2 is per model family; the law pools all runs.\n\n"
            + table(t, cols))


def scaling_plots_section(usable: pd.DataFrame, has_laws: bool, out_dir: Path) -> str:
    blocks = ["## Loss vs scale"]
    candidates = [("tokens", "training tokens D"), ("train_flops", "training FLOPs"),
                  ("n_params", "parameters"), ("n_params_unrolled", "unrolled parameters")]
    for col, label in candidates:
        values = usable[col].astype(float)
        if values.notna().sum() >= 2 and values.nunique() >= 2:
            png = figures.plot_loss_vs(usable, col, label, out_dir / "figures" / f"loss_vs_{col}")
            blocks.append(figure_link(png, out_dir, f"loss vs {label}"))
    if len(blocks) == 1:
        blocks.append("Skipped: tokens, FLOPs and parameter counts do not vary across runs.")
    elif not has_laws and usable["n_params"].nunique() >= 2 and usable["tokens"].nunique() >= 2:
        blocks.insert(1, "Model sizes and token counts both vary (ladder-style sweep); points "
                         "only, no parametric L(N, D) fit is made here.")
    return "\n\n".join(blocks)


def runs_section(usable: pd.DataFrame) -> str:
    cols = ["run", "model_name", "model_kind", "mean_recurrence", "mean_backprop", "seed",
            "flop_budget", "tokens", "n_params", "n_params_unrolled", "train_flops", "loss"]
    t = with_labels(usable.sort_values(["model_name", "flop_budget", "mean_recurrence"]))
    if "seed" in t and not t["seed"].notna().any():
        cols.remove("seed")  # no run logged a seed: no empty column
    return f"## Runs used ({len(t)})\n\n" + table(t, [c for c in cols if c in t])
