"""The FLOW report: task accuracy against forgetting for every fine-tuning run of a sweep, the Pareto
frontier, a table, and an honest verdict on whether FLOW forgets less than standard fine-tuning at
comparable accuracy.

`python -m analysis.flow_report --tracking-uri sqlite:///mlflow.db --experiment flow --sweep-id flow
--out reports/flow`. No torch: the runs come from MLflow.

Comparable accuracy: standard fine-tuning's accuracy/forgetting curve is the pre-trained model (no
forgetting), its WiSE-FT averages and the fully fine-tuned model; FLOW's forgetting is compared with that
curve's forgetting interpolated at FLOW's accuracy, and with standard fine-tuning itself.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.markdown import figure_link, fmt, table
from analysis.plots import plt, save_figure
from analysis.runs import _get_experiment_id, _search_all

FINETUNE_KIND = "finetune"
METRICS = ["task_accuracy", "forgetting", "retention", "combined", "val_loss", "base/val_loss",
           "base/task_accuracy", "flow/tau", "flow/mean_weight", "flow/weight_q10", "flow/weight_q90"]
MARKERS = {"standard": "o", "l2": "s", "wise": "D", "lora": "^", "flow": "*", "flow_l2": "P", "flow_wise": "X",
           "flow_lora": "v"}


def load_finetune_runs(tracking_uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """Finished fine-tuning runs of a sweep, one row per identity (the latest)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = _get_experiment_id(client, experiment)
    sweep = sweep_id.replace("'", "\\'")
    rows = []
    for r in _search_all(client, exp_id, f"tags.sweep_id = '{sweep}' and tags.run_kind = '{FINETUNE_KIND}'"):
        if r.info.status != "FINISHED":
            continue
        rec = {"run_id": r.info.run_id, "start_time": r.info.start_time, "method": r.data.tags.get("method"),
               "tau": r.data.tags.get("tau", "none"), "config_hash": r.data.tags.get("config_hash"),
               "alpha": float(r.data.params.get("wise.alpha", "nan")) if "wise" in r.data.tags.get("method", "")
               else math.nan, "lr": float(r.data.params.get("train.lr", "nan")),
               "steps": float(r.data.params.get("train.steps", "nan"))}
        rec.update({m: r.data.metrics.get(m, math.nan) for m in METRICS})
        rows.append(rec)
    df = pd.DataFrame(rows, columns=["run_id", "start_time", "method", "tau", "config_hash", "alpha", "lr", "steps",
                                     *METRICS])
    if df.empty:
        return df
    df = df.sort_values("start_time").drop_duplicates("config_hash", keep="last")
    return df.sort_values(["method", "lr", "tau", "alpha"]).reset_index(drop=True)


def pareto_mask(accuracy: np.ndarray, forgetting: np.ndarray) -> np.ndarray:
    """True for points no other point beats on both axes (higher accuracy, lower forgetting)."""
    n = len(accuracy)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        better = (accuracy >= accuracy[i]) & (forgetting <= forgetting[i]) & \
                 ((accuracy > accuracy[i]) | (forgetting < forgetting[i]))
        keep[i] = not better.any()
    return keep


def standard_curve(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, forgetting) along the Pareto frontier of standard fine-tuning's family, sorted by
    accuracy: the pre-trained model, the WiSE-FT averages of the standard model and the standard model."""
    fam = df[df["method"].isin(["standard", "wise"])]
    base = df.iloc[0]
    acc = np.r_[base["base/task_accuracy"], fam["task_accuracy"].to_numpy()]
    fgt = np.r_[0.0, fam["forgetting"].to_numpy()]
    keep = pareto_mask(acc, fgt)
    acc, fgt = acc[keep], fgt[keep]
    order = np.argsort(acc, kind="stable")
    return acc[order], fgt[order]


def forgetting_at(curve: tuple[np.ndarray, np.ndarray], accuracy: float) -> float:
    """The standard family's forgetting interpolated at `accuracy`; NaN outside the accuracies it reached."""
    acc, fgt = curve
    if len(acc) == 0 or not acc[0] <= accuracy <= acc[-1]:
        return math.nan
    return float(np.interp(accuracy, acc, fgt))


def _same_recipe(std: pd.DataFrame, run: pd.Series) -> pd.Series:
    """The standard fine-tuning run trained like `run` (same lr and steps), else the first one."""
    same = std[(std["lr"] == run["lr"]) & (std["steps"] == run["steps"])]
    return same.iloc[0] if not same.empty else std.iloc[0]


def _compare(f: pd.Series, s: pd.Series, curve: tuple[np.ndarray, np.ndarray]) -> tuple[float, str]:
    """FLOW run f against standard run s (same recipe) and against the standard family at f's accuracy."""
    ref = forgetting_at(curve, f["task_accuracy"])
    direct = (f"accuracy {f['task_accuracy']:.3f} vs {s['task_accuracy']:.3f} "
              f"(Δ {f['task_accuracy'] - s['task_accuracy']:+.3f}), forgetting {f['forgetting']:+.4f} vs "
              f"{s['forgetting']:+.4f} (Δ {f['forgetting'] - s['forgetting']:+.4f})")
    if math.isnan(ref):
        return ref, direct + "; its accuracy lies outside what the standard family covers"
    word = "less" if f["forgetting"] < ref else "more"
    return ref, direct + (f"; at equal accuracy the standard family forgets {ref:+.4f}, so FLOW forgets {word} "
                          f"by {abs(f['forgetting'] - ref):.4f}")


def verdict(df: pd.DataFrame) -> list[str]:
    """The comparison the report leads with, as markdown lines, numbers included."""
    std = df[df["method"] == "standard"]
    flows = df[df["method"] == "flow"]
    if std.empty or flows.empty:
        return ["Not enough runs for a verdict: the sweep needs `standard` and `flow` runs."]
    curve = standard_curve(df)
    head, lines, less, comparable = [], [], 0, 0
    for _, f in flows.iterrows():
        s = _same_recipe(std, f)
        ref, text = _compare(f, s, curve)
        if not math.isnan(ref):
            comparable += 1
            less += bool(f["forgetting"] < ref)
        lines.append(f"- FLOW τ={f['tau']}, lr {f['lr']:g} (τ={f['flow/tau']:.3g}, mean weight "
                     f"{f['flow/mean_weight']:.3f}, weights q10–q90 {f['flow/weight_q10']:.3f}–"
                     f"{f['flow/weight_q90']:.3f}) vs standard: {text}.")
        if f["tau"] == "median":
            if math.isnan(ref):
                head.append(f"**Verdict (τ = median, lr {f['lr']:g}):** no standard run or WiSE-FT average reaches "
                            f"FLOW's accuracy, so there is no comparison at equal accuracy; directly, {text}.")
            else:
                word = "forgets LESS" if f["forgetting"] < ref else "does NOT forget less"
                head.append(f"**Verdict (τ = median, lr {f['lr']:g}):** at comparable accuracy "
                            f"({f['task_accuracy']:.3f}) FLOW {word} than standard fine-tuning: forgetting "
                            f"{f['forgetting']:+.4f} vs {ref:+.4f} nats/token on the standard family's "
                            f"accuracy/forgetting frontier (directly: {text}).")
    head.append(f"Over all FLOW runs, FLOW forgets less than the standard family at equal accuracy in {less} of "
                f"{comparable} comparable runs ({len(flows) - comparable} outside its accuracy range).")
    spread = flows["flow/weight_q90"] / flows["flow/weight_q10"]
    close = "close to each other, so the weights differ little" if spread.max() < 2 else "spread out, so the weights differ"
    head.append(f"What FLOW had to work with: the pre-trained losses on the task samples are {close} between easy "
                f"and hard samples (q90/q10 weight ratio {spread.min():.2f}–{spread.max():.2f}); with AdamW the "
                "overall scale of the weights (mean weight < 1) hardly changes the update, so FLOW acts through "
                "this relative spread only.")
    std_lines = [f"- Standard fine-tuning, lr {r['lr']:g}: accuracy {r['task_accuracy']:.3f}, forgetting "
                 f"{r['forgetting']:+.4f} nats/token (pre-trained: accuracy {r['base/task_accuracy']:.3f}, "
                 f"validation loss {r['base/val_loss']:.4f})." for _, r in std.iterrows()]
    return head + [""] + std_lines + lines


def plot_pareto(df: pd.DataFrame, front: np.ndarray, stem: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("tab10")
    for k, (method, g) in enumerate(df.groupby("method", sort=True)):
        ax.scatter(g["forgetting"], g["task_accuracy"], marker=MARKERS.get(method, "o"), s=60, color=cmap(k % 10),
                   label=method, edgecolor="black", linewidth=0.5, zorder=3)
        for _, r in g.iterrows():
            tag = r["tau"] if method.startswith("flow") else ""
            tag += f" α={r['alpha']:g}" if not math.isnan(r["alpha"]) else ""
            if tag:
                ax.annotate(tag.strip(), (r["forgetting"], r["task_accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    base = df.iloc[0]
    ax.scatter([0], [base["base/task_accuracy"]], marker="o", facecolor="white", edgecolor="black", s=60,
               label="pre-trained", zorder=3)
    pts = df[front].sort_values("forgetting")
    ax.step(pts["forgetting"], pts["task_accuracy"], where="post", color="gray", linestyle="--", zorder=2,
            label="Pareto frontier")
    ax.set_xlabel("forgetting: Δ validation loss on the pre-training corpus (nats/token, lower is better)")
    ax.set_ylabel("target task accuracy (exact match, greedy)")
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
    cols = ["method", "lr", "tau", "alpha", "task_accuracy", "forgetting", "retention", "combined", "flow/tau",
            "flow/mean_weight", "frontier"]
    md = [f"# FLOW vs baselines — sweep `{sweep_id}`", "",
          "Target: the task's exact-match accuracy (greedy). Forgetting: rise of the validation loss on the "
          "pre-training corpus (nats/token) at the base model's loop count; retention = base loss ÷ fine-tuned "
          "loss; combined = (accuracy + retention) / 2.", "", *verdict(df), "",
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
