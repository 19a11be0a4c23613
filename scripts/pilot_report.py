"""Loss against µ_rec per FLOP budget for the pilot sweeps (docs/pilot.md), straight from the run dirs.

    .venv/bin/python scripts/pilot_report.py --root . --out docs/pilot pilot-d32 pilot-d48 ...

Reads each sweep's manifest (sweeps/<id>/manifest.json) and each grid point's run dir (status.json,
metrics.jsonl, config.yaml), so it works on sweeps that are still running (unfinished points are listed,
not plotted) and needs neither MLflow nor torch. Writes `<out>/pilot.md` (one table row per run: sweep,
budget, µ_rec, seed, lr, tokens, tokens per parameter, final validation loss at T = µ_rec, approximate
wall time) and
`<out>/pilot.png|pdf` (one panel per sweep, one curve per budget, every run drawn as a point) and
`<out>/pilot_gap.png|pdf` (the cost of looping against µ_rec and against tokens per parameter).

The figures can be redrawn from a table this script wrote, without the run dirs:

    .venv/bin/python scripts/pilot_report.py --table docs/pilot/pilot.md --noise 0.007 --out docs/pilot
"""

from __future__ import annotations

import argparse
import json
import re
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from analysis.report.figures import budget_label, discrete_colors, legend_outside, plain_ticks  # noqa: E402


def _overrides(job: dict) -> dict[str, str]:
    return dict(o.split("=", 1) for o in job["overrides"] if "=" in o)


def _last_train_record(path: Path) -> dict:
    last = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "train/tokens" in rec:
                last = rec
    return last


def _wall_minutes(run_dir: Path) -> float | None:
    """From the config's write (start) to the last status write (end): approximate, and only meaningful for a
    run that was not interrupted."""
    start, end = run_dir / "config.yaml", run_dir / "status.json"
    if not (start.exists() and end.exists()):
        return None
    return (end.stat().st_mtime - start.stat().st_mtime) / 60


def collect(roots: list[Path], sweep_ids: list[str]) -> list[dict]:
    """One row per grid point; each sweep is read from the first root that holds its manifest."""
    rows = []
    for sweep_id in sweep_ids:
        root = next((r for r in roots if (r / "sweeps" / sweep_id / "manifest.json").exists()), roots[0])
        manifest = json.loads((root / "sweeps" / sweep_id / "manifest.json").read_text())
        for job in manifest["jobs"]:
            run_dir = root / "runs" / job["config_hash"]
            status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
            last = _last_train_record(run_dir / "metrics.jsonl")
            o = _overrides(job)
            train = cfg.get("train", {})
            rows.append({
                "sweep": re.sub(r"-mu\d+$", "", sweep_id),  # one µ_rec per sweep id (run side by side): one family
                "hash": job["config_hash"], "state": status.get("status", "missing"),
                "C": float(o.get("train.flop_budget", train.get("flop_budget") or "nan")),
                "mu": int(o.get("model.mean_recurrence", cfg.get("model", {}).get("mean_recurrence") or 0)),
                "seed": int(o.get("train.seed", train.get("seed", 0))),
                "lr": float(o.get("train.lr", train.get("lr", "nan"))),
                "tokens": last.get("train/tokens"),
                "loss": status.get("final", {}).get("eval/loss"),
                "wall_min": _wall_minutes(run_dir) if status.get("status") == "finished" else None,
            })
    return rows


def read_table(path: Path) -> tuple[list[dict], dict[str, int]]:
    """The rows (and each family's parameter count, from tokens / tokens per parameter) of a table
    ``write_table`` wrote."""
    rows, n_params = [], {}
    for line in path.read_text().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 10:
            continue
        sweep, C, mu, seed, lr, tokens, tpp, loss, wall, state = cells
        tok = float(tokens.split()[0]) * 1e6 if tokens != "—" else None
        if tok and tpp != "—" and tok > n_params.get(sweep, (0, 0))[0]:  # the longest run: most digits
            n_params[sweep] = (tok, tok / float(tpp))
        rows.append({"sweep": sweep, "hash": "", "state": state, "C": float(C), "mu": int(mu), "seed": int(seed),
                     "lr": float(lr), "tokens": tok, "loss": float(loss) if loss != "—" else None,
                     "wall_min": float(wall) if wall != "—" else None})
    return rows, {k: round(v[1]) for k, v in n_params.items()}


def write_table(rows: list[dict], n_params: dict[str, int], out: Path) -> None:
    lines = ["| sweep | C (FLOPs) | µ_rec | seed | lr | tokens | tokens/param | eval loss (T = µ_rec) | wall (min) | state |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["sweep"], r["C"], r["seed"], r["lr"], r["mu"])):
        tpp = f"{r['tokens'] / n_params[r['sweep']]:.1f}" if r["tokens"] and r["sweep"] in n_params else "—"
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "—"
        tokens = f"{r['tokens'] / 1e6:.2f} M" if r["tokens"] else "—"
        wall = f"{r['wall_min']:.1f}" if r["wall_min"] is not None else "—"
        lines.append(f"| {r['sweep']} | {r['C']:.2g} | {r['mu']} | {r['seed']} | {r['lr']:g} | {tokens} | {tpp} "
                     f"| {loss} | {wall} | {r['state']} |")
    (out / "pilot.md").write_text("\n".join(lines) + "\n")


def _mu_axis(ax, mus) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(mus))
    plain_ticks(ax.xaxis)
    ax.set_xlabel("µ_rec (training loops)")


def plot(rows: list[dict], out: Path, noise: float | None = None) -> None:
    """One panel per sweep, all on the same axes: the loss above the best run of the same budget (so a
    0.002 gap looks as small as it is next to a 0.2 one), a curve per budget coloured by budget (one
    legend, outside the panels), the seed-noise band above zero (points inside it are not worse than
    the best), the best run of each budget starred."""
    done = [r for r in rows if r["loss"] is not None and math.isfinite(r["loss"])]
    sweeps = sorted({r["sweep"] for r in done})
    ncols = min(3, len(sweeps))
    nrows = -(-len(sweeps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 1.6, 2.7 * nrows), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    colors = discrete_colors([r["C"] for r in done], "plasma")
    for ax in axes.flat[len(sweeps):]:
        ax.set_visible(False)
    for ax, sweep in zip(axes.flat, sweeps):
        groups = defaultdict(list)
        for r in done:
            if r["sweep"] == sweep:
                groups[r["C"]].append(r)
        best_loss = []
        for C, pts in sorted(groups.items()):
            by_mu = defaultdict(list)
            for p in pts:
                by_mu[p["mu"]].append(p["loss"])
            mus = sorted(by_mu)
            means = [sum(by_mu[m]) / len(by_mu[m]) for m in mus]
            best = min(means)
            best_loss.append(best)
            ax.plot(mus, [m - best for m in means], "-o", color=colors[C], ms=4, label=budget_label(C))
            ax.plot([mus[means.index(best)]], [0.0], "*", color=colors[C], ms=11, mec="k", zorder=4)
        if noise:
            ax.axhspan(0, noise, color="0.85", zorder=0, label=f"within one seed noise ({noise:g}) of the best")
        ax.axhline(0, color="k", lw=0.6)
        lr = sorted({r["lr"] for r in done if r["sweep"] == sweep})
        ax.set_title(f"{sweep} (lr {', '.join(f'{v:g}' for v in lr)}; best {', '.join(f'{b:.3f}' for b in best_loss)})",
                     fontsize=8)
        ax.grid(alpha=0.3)
        _mu_axis(ax, {r["mu"] for r in done})
    for ax in axes[:, 0]:
        ax.set_ylabel("loss − best loss at\nthe same C (nats/token)")
        plain_ticks(ax.yaxis, minor=False)
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    order = [budget_label(C) for C in sorted(colors)] + [k for k in handles if not k.startswith("C =")]
    fig.legend([handles[k] for k in order], order, loc="outside right upper", fontsize=7, frameon=False,
               title="★ best µ_rec of its budget", title_fontsize=7)
    fig.suptitle("Validation loss at T = µ_rec against µ_rec, per pilot sweep (shared axes)", fontsize=9)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"pilot.{ext}", dpi=150)


def plot_gap(rows: list[dict], n_params: dict[str, int], out: Path, noise: float | None = None) -> None:
    """Left: every family with a µ_rec = 1 point, loss(µ_rec) − loss(1) against µ_rec, labelled by tokens per
    parameter at µ_rec = 1. Right: the same gaps against tokens per parameter, one marker per µ_rec, with the
    seed noise as a band: where the points cross zero, looping starts to pay."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13.0, 4.0), sharey=True, layout="constrained")
    fams = defaultdict(dict)
    for r in rows:
        if r["loss"] is not None and r["seed"] == 0:
            fams[(r["sweep"], r["C"])][r["mu"]] = r
    fams = {k: v for k, v in fams.items() if 1 in v and len(v) > 1}
    order = sorted(fams, key=lambda k: fams[k][1]["tokens"] / n_params.get(k[0], 1))
    cmap = plt.get_cmap("viridis", max(len(order), 2))
    for i, key in enumerate(order):
        pts = fams[key]
        mus = sorted(pts)
        tpp = pts[1]["tokens"] / n_params[key[0]] if key[0] in n_params else float("nan")
        ax.plot(mus, [pts[m]["loss"] - pts[1]["loss"] for m in mus], "o-", color=cmap(i),
                label=f"{key[0]}, {budget_label(key[1])}: {tpp:.0f} tokens/param")
    if noise:
        ax.axhspan(-noise, noise, color="0.85", zorder=0)
    ax.axhline(0, color="k", lw=0.8)
    _mu_axis(ax, {m for k in order for m in fams[k]})
    ax.set_ylabel("loss − loss at µ_rec = 1 (nats/token)")
    plain_ticks(ax.yaxis, minor=False)
    ax.set_title("isoFLOP: cost of looping (below 0 = looping pays)", fontsize=9)
    legend_outside(ax, title="family, budget: tokens/param at µ_rec = 1 (colour)")

    markers = {2: "o", 3: "D", 4: "s", 6: "v", 8: "^", 12: "P", 16: "X"}
    by_mu = defaultdict(list)
    for key in order:
        pts = fams[key]
        if key[0] not in n_params:
            continue
        tpp = pts[1]["tokens"] / n_params[key[0]]
        for m in sorted(pts):
            if m > 1:
                by_mu[m].append((tpp, pts[m]["loss"] - pts[1]["loss"]))
    mu_cmap = plt.get_cmap("tab10")
    for j, m in enumerate(sorted(by_mu)):
        xs, ys = zip(*sorted(by_mu[m]))
        ax2.plot(xs, ys, markers.get(m, "o"), color=mu_cmap(j), ms=6, label=f"µ_rec = {m}")
    if noise:
        ax2.axhspan(-noise, noise, color="0.85", zorder=0, label=f"± seed noise ({noise:g})")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xscale("log")
    ax2.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([10, 20, 50, 100, 200, 500, 1000, 2000]))
    plain_ticks(ax2.xaxis)
    ax2.set_xlabel("tokens per parameter at µ_rec = 1")
    ax2.set_title("cost of looping against data per parameter (same y axis)", fontsize=9)
    legend_outside(ax2)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"pilot_gap.{ext}", dpi=150)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweeps", nargs="*")
    ap.add_argument("--table", default=None,
                    help="redraw the figures from a pilot.md this script wrote (no run dirs needed)")
    ap.add_argument("--root", action="append", default=None,
                    help="folder holding sweeps/ and runs/ (repeat for sweeps kept in different clones; default .)")
    ap.add_argument("--noise", type=float, default=None, help="seed noise (nats/token), drawn as a band")
    ap.add_argument("--out", default="docs/pilot")
    ap.add_argument("--n-params", default="", help="sweep=params,... for the tokens-per-parameter column")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_params = {k: int(v) for k, v in (kv.split("=") for kv in args.n_params.split(",") if kv)}  # by family
    if args.table:
        rows, read = read_table(Path(args.table))
        n_params = {**read, **n_params}
    elif args.sweeps:
        rows = collect([Path(r) for r in (args.root or ["."])], args.sweeps)
        write_table(rows, n_params, out)
    else:
        ap.error("name the sweeps to read, or --table FILE")
    plot(rows, out, args.noise)
    plot_gap(rows, n_params, out, args.noise)
    print((out / "pilot.md").read_text() if not args.table else f"figures redrawn in {out}")


if __name__ == "__main__":
    main()
