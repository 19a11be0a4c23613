"""The FLOW report: task accuracy against forgetting for every fine-tuning run of a sweep, the Pareto
frontier, a table, and an honest verdict on whether FLOW forgets less than standard fine-tuning at
comparable accuracy.

`python -m analysis.flow_report --tracking-uri sqlite:///mlflow.db --experiment flow --sweep-id flow
--out reports/flow`. No torch: the runs come from MLflow.

Comparable accuracy: FLOW is paired with standard fine-tuning trained alike (same lr, steps and seed);
the pair's accuracies count as comparable within two binomial standard errors, and then the forgetting
of the two decides. The Pareto frontier shows every method against all others.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.report.markdown import figure_link, table
from analysis.report.figures import plt, save_figure
from analysis.runs.store import search_runs
from tracking_contract import FINETUNE_KIND, sweep_filter

METRICS = ["task_accuracy", "forgetting", "retention", "combined", "val_loss", "base/val_loss",
           "base/task_accuracy", "flow/tau", "flow/mean_weight", "flow/weight_q10", "flow/weight_q90"]
MARKERS = {"standard": "o", "l2": "s", "wise": "D", "lora": "^", "flow": "*", "flow_l2": "P", "flow_wise": "X",
           "flow_lora": "v"}


def load_finetune_runs(tracking_uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """Finished fine-tuning runs of a sweep, one row per identity (the latest)."""
    rows = []
    for r in search_runs(tracking_uri, experiment, sweep_filter(sweep_id, FINETUNE_KIND)):
        if r.info.status != "FINISHED":
            continue
        rec = {"run_id": r.info.run_id, "start_time": r.info.start_time, "method": r.data.tags.get("method"),
               "tau": r.data.tags.get("tau", "none"), "config_hash": r.data.tags.get("config_hash"),
               "alpha": float(r.data.params.get("wise.alpha", "nan")) if "wise" in r.data.tags.get("method", "")
               else math.nan, "lr": float(r.data.params.get("train.lr", "nan")),
               "steps": float(r.data.params.get("train.steps", "nan")),
               "seed": int(r.data.params.get("train.seed", 0)), "n_test": int(r.data.params.get("task.n_test", 0))}
        rec.update({m: r.data.metrics.get(m, math.nan) for m in METRICS})
        rows.append(rec)
    df = pd.DataFrame(rows, columns=["run_id", "start_time", "method", "tau", "config_hash", "alpha", "lr", "steps",
                                     "seed", "n_test", *METRICS])
    if df.empty:
        return df
    df = df.sort_values("start_time").drop_duplicates("config_hash", keep="last")
    return df.sort_values(["method", "lr", "tau", "alpha", "seed"]).reset_index(drop=True)


def pareto_mask(accuracy: np.ndarray, forgetting: np.ndarray) -> np.ndarray:
    """True for points no other point beats on both axes (higher accuracy, lower forgetting)."""
    n = len(accuracy)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        better = (accuracy >= accuracy[i]) & (forgetting <= forgetting[i]) & \
                 ((accuracy > accuracy[i]) | (forgetting < forgetting[i]))
        keep[i] = not better.any()
    return keep


def paired_comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """FLOW against standard fine-tuning trained alike (same lr, steps and seed), per (τ, lr, steps) over seeds.

    Accuracies count as comparable when they differ by at most two binomial standard errors of the
    difference of the seed-mean accuracies."""
    std = df[df["method"] == "standard"][["lr", "steps", "seed", "task_accuracy", "forgetting"]]
    pairs = df[df["method"] == "flow"].merge(std, on=["lr", "steps", "seed"], suffixes=("", "_std"))
    if pairs.empty:
        return pd.DataFrame()
    pairs = pairs.assign(d_acc=pairs["task_accuracy"] - pairs["task_accuracy_std"],
                         d_fgt=pairs["forgetting"] - pairs["forgetting_std"])
    rows = []
    for (tau, lr, steps), g in pairs.groupby(["tau", "lr", "steps"], sort=True):
        p = (g["task_accuracy"].mean() + g["task_accuracy_std"].mean()) / 2
        n = g["n_test"].iloc[0] * len(g)
        tol = 2 * math.sqrt(max(p * (1 - p), 1e-4) * 2 / max(n, 1))
        d_acc, d_fgt = g["d_acc"].mean(), g["d_fgt"].mean()
        rows.append({"tau": tau, "lr": lr, "steps": steps, "seeds": len(g),
                     "acc_flow": g["task_accuracy"].mean(), "acc_std": g["task_accuracy_std"].mean(),
                     "d_acc": d_acc, "acc_tol": tol, "comparable": abs(d_acc) <= tol,
                     "fgt_flow": g["forgetting"].mean(), "fgt_std": g["forgetting_std"].mean(), "d_fgt": d_fgt,
                     "d_fgt_sd": g["d_fgt"].std(ddof=1) if len(g) > 1 else math.nan,
                     "fgt_rel": d_fgt / g["forgetting_std"].mean(),
                     "seeds_less": int((g["d_fgt"] < 0).sum()),
                     "mean_weight": g["flow/mean_weight"].mean(),
                     "spread": (g["flow/weight_q90"] / g["flow/weight_q10"]).mean()})
    comp = pd.DataFrame(rows)
    # A one-seed setting borrows the seed-to-seed spread measured at the same lr, when there is one.
    comp["sd_borrowed"] = False
    for i, c in comp[comp["seeds"] == 1].iterrows():
        ref = comp[(comp["lr"] == c["lr"]) & (comp["seeds"] > 1)]
        if not ref.empty:
            comp.loc[i, ["d_fgt_sd", "sd_borrowed"]] = [ref["d_fgt_sd"].iloc[0], True]
    return comp


def _outcome(c: pd.Series) -> str:
    """'less', 'more' or 'unclear' forgetting of FLOW: the mean paired difference must exceed two standard
    errors (seed-to-seed sd / √seeds) when the spread is known."""
    if not math.isnan(c["d_fgt_sd"]) and abs(c["d_fgt"]) <= 2 * c["d_fgt_sd"] / math.sqrt(c["seeds"]):
        return "unclear"
    return "less" if c["d_fgt"] < 0 else "more"


def _comparison_line(c: pd.Series) -> str:
    sd = "; one seed, no noise estimate" if math.isnan(c["d_fgt_sd"]) else \
        f" ± {c['d_fgt_sd']:.4f} sd over seeds" + (" (borrowed from this lr's multi-seed pair)" if c["sd_borrowed"] else "")
    word = {"less": "**FLOW forgets less**", "more": "**FLOW forgets more**",
            "unclear": "**no clear difference** (within two standard errors)"}[_outcome(c)]
    outcome = f"{word} ({c['fgt_rel']:+.0%}; lower in {c['seeds_less']} of {c['seeds']} seeds)" if c["comparable"] \
        else "accuracies differ by more than the noise: no comparison at equal accuracy (see the frontier)"
    return (f"- τ={c['tau']}, lr {c['lr']:g}, {c['seeds']} seed(s): accuracy {c['acc_flow']:.3f} vs "
            f"{c['acc_std']:.3f} (Δ {c['d_acc']:+.3f}, comparable within ±{c['acc_tol']:.3f}: "
            f"{'yes' if c['comparable'] else 'no'}); forgetting {c['fgt_flow']:+.4f} vs {c['fgt_std']:+.4f} "
            f"nats/token (Δ {c['d_fgt']:+.4f}{sd}) → {outcome}. Mean weight {c['mean_weight']:.3f}, "
            f"q90/q10 weight ratio {c['spread']:.2f}.")


def verdict(df: pd.DataFrame, front: np.ndarray) -> list[str]:
    """The comparison the report leads with, as markdown lines, numbers included."""
    comp = paired_comparisons(df)
    if comp.empty:
        return ["Not enough runs for a verdict: the sweep needs `standard` and `flow` runs with the same recipe."]
    ok = comp[comp["comparable"]]
    outcomes = ok.apply(_outcome, axis=1) if not ok.empty else pd.Series(dtype=str)
    lines = ["**Verdict.** FLOW vs standard fine-tuning trained alike (same lr, steps, seed): at comparable "
             f"accuracy FLOW forgets less in {int((outcomes == 'less').sum())} of {len(ok)} settings, more in "
             f"{int((outcomes == 'more').sum())}, with no clear difference in {int((outcomes == 'unclear').sum())} "
             f"({len(comp) - len(ok)} more settings had accuracies too different to compare)."]
    med = comp[comp["tau"] == "median"]
    for _, c in med.iterrows():
        lines.append(_comparison_line(c).replace("- τ=median", "- **τ = median**", 1))
    on_front = sorted(set(df.loc[front, "method"]))
    lines += ["", f"Pareto frontier (accuracy up, forgetting down): {', '.join(on_front)}. A method off the "
              "frontier is beaten on both axes by another run.",
              "Caveats: one base model; forgetting is the loss on the pre-training validation rows; accuracy on "
              f"{int(df['n_test'].max())} test problems (binomial noise is in the tolerance above). With AdamW the "
              "scale of the weights (mean weight < 1) hardly changes the update, so FLOW acts through the relative "
              "weights only, whose q90/q10 spread is listed per setting.", "", "All FLOW settings:"]
    lines += [_comparison_line(c) for _, c in comp.iterrows()]
    return lines


def plot_pareto(df: pd.DataFrame, front: np.ndarray, stem: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    cmap = plt.get_cmap("tab10")
    for k, (method, g) in enumerate(df.groupby("method", sort=True)):
        ax.scatter(g["forgetting"], g["task_accuracy"], marker=MARKERS.get(method, "o"), s=60, color=cmap(k % 10),
                   label=method, edgecolor="black", linewidth=0.5, zorder=3)
        for _, r in g.iterrows():
            # Only what sets a point apart from the default recipe, so the cluster near the origin stays legible.
            tag = f"τ={r['tau']}" if method == "flow" and r["tau"] != "median" else ""
            tag += f" α={r['alpha']:g}" if not math.isnan(r["alpha"]) and r["alpha"] != 0.5 else ""
            if tag:
                ax.annotate(tag.strip(), (r["forgetting"], r["task_accuracy"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    base = df.iloc[0]
    ax.scatter([0], [base["base/task_accuracy"]], marker="o", facecolor="white", edgecolor="black", s=60,
               label="pre-trained", zorder=3)
    pts = df[front].sort_values("forgetting")
    ax.step(pts["forgetting"], pts["task_accuracy"], where="post", color="gray", linestyle="--", zorder=2,
            label="Pareto frontier")
    ax.set_xscale("symlog", linthresh=0.5, linscale=2)  # linear near 0 where most runs are, log beyond
    ax.set_xlabel("forgetting: Δ validation loss on the pre-training corpus (nats/token, lower is better)")
    ax.set_ylabel("target task accuracy (exact match, greedy)")
    ax.set_title("every run; the learning rate sets the cluster (higher lr: more accuracy, more forgetting)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def write_report(df: pd.DataFrame, out: Path, sweep_id: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if df.empty:
        raise LookupError(f"no finished fine-tuning runs in sweep {sweep_id!r}")
    front = pareto_mask(df["task_accuracy"].to_numpy(), df["forgetting"].to_numpy())
    png = plot_pareto(df, front, out / "pareto")
    shown = df.assign(frontier=front)
    cols = ["method", "lr", "seed", "tau", "alpha", "task_accuracy", "forgetting", "retention", "combined", "flow/tau",
            "flow/mean_weight", "frontier"]
    md = [f"# FLOW vs baselines — sweep `{sweep_id}`", "",
          "Target: the task's exact-match accuracy (greedy). Forgetting: rise of the validation loss on the "
          "pre-training corpus (nats/token) at the base model's loop count; retention = base loss ÷ fine-tuned "
          "loss; combined = (accuracy + retention) / 2.", "", *verdict(df, front), "",
          figure_link(png, out, "Task accuracy vs forgetting (Pareto frontier dashed)"), "",
          table(shown, cols, {"alpha": lambda v: "—" if math.isnan(v) else f"{v:g}", "lr": lambda v: f"{v:g}"}), ""]
    report = out / "report.md"
    report.write_text("\n".join(md))
    df.to_csv(out / "runs.csv", index=False)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="flow")
    ap.add_argument("--sweep-id", default="flow")
    ap.add_argument("--out", default="reports/flow")
    a = ap.parse_args(argv)
    report = write_report(load_finetune_runs(a.tracking_uri, a.experiment, a.sweep_id), Path(a.out), a.sweep_id)
    print(report.read_text().split("\n\n![")[0])
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
