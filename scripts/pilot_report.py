"""Loss against µ_rec per FLOP budget for the pilot sweeps (docs/pilot.md), straight from the run dirs.

    .venv/bin/python scripts/pilot_report.py --root . --out docs/pilot pilot-d32 pilot-d48 ...

Reads each sweep's manifest (sweeps/<id>/manifest.json) and each grid point's run dir (status.json,
metrics.jsonl, config.yaml), so it works on sweeps that are still running (unfinished points are listed,
not plotted) and needs neither MLflow nor torch. Writes `<out>/pilot.md` (one table row per run: sweep,
budget, µ_rec, seed, lr, tokens, tokens per parameter, final validation loss at T = µ_rec, approximate
wall time) and
`<out>/pilot.png|pdf` (one panel per sweep, one curve per budget, every run drawn as a point).
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


def plot(rows: list[dict], out: Path) -> None:
    sweeps = sorted({r["sweep"] for r in rows})
    ncols = min(4, len(sweeps))
    nrows = -(-len(sweeps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(sweeps):]:
        ax.set_visible(False)
    for ax, sweep in zip(axes.flat, sweeps):
        groups = defaultdict(list)
        for r in rows:
            if r["sweep"] == sweep and r["loss"] is not None and math.isfinite(r["loss"]):
                groups[(r["C"], r["lr"])].append(r)
        cmap = plt.get_cmap("viridis", max(len(groups), 2))
        for i, ((C, lr), pts) in enumerate(sorted(groups.items())):
            by_mu = defaultdict(list)
            for p in pts:
                by_mu[p["mu"]].append(p["loss"])
            mus = sorted(by_mu)
            means = [sum(by_mu[m]) / len(by_mu[m]) for m in mus]
            label = f"C = {C:.2g} FLOPs" + (f", lr {lr:g}" if len({k[1] for k in groups}) > 1 else "")
            ax.plot(mus, means, "-", color=cmap(i), label=label)
            ax.plot([p["mu"] for p in pts], [p["loss"] for p in pts], "o", color=cmap(i), ms=4)
            best = mus[means.index(min(means))]
            ax.plot([best], [min(means)], "*", color=cmap(i), ms=12, mec="k")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["mu"] for r in rows if r["sweep"] == sweep and r["loss"] is not None}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(sweep, fontsize=9)
        ax.set_xlabel("µ_rec (training loops)")
        ax.set_ylabel("val. loss at T = µ_rec (nats/token)")
        losses = [r["loss"] for r in rows if r["sweep"] == sweep and r["loss"] is not None]
        lo, hi = min(losses), max(losses)
        ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.1 * (hi - lo) + 0.06 * len(groups) * (hi - lo))  # legend room
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"pilot.{ext}", dpi=150)


def plot_gap(rows: list[dict], n_params: dict[str, int], out: Path, noise: float | None = None) -> None:
    """Left: every family with a µ_rec = 1 point, loss(µ_rec) − loss(1) against µ_rec, labelled by tokens per
    parameter at µ_rec = 1. Right: the same gaps against tokens per parameter, one marker per µ_rec, with the
    seed noise as a band: where the points cross zero, looping starts to pay."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.4, 3.8))
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
                label=f"{key[0]}, C = {key[1]:.2g}: {tpp:.0f} tokens/param")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("µ_rec (training loops)")
    ax.set_ylabel("loss − loss at µ_rec = 1 (nats/token)")
    ax.set_title("isoFLOP: cost of looping (below 0 = looping pays)", fontsize=9)
    ax.legend(fontsize=6.5)

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
    ax2.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_xlabel("tokens per parameter at µ_rec = 1")
    ax2.set_ylabel("loss − loss at µ_rec = 1 (nats/token)")
    ax2.set_title("cost of looping against data per parameter", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"pilot_gap.{ext}", dpi=150)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--root", action="append", default=None,
                    help="folder holding sweeps/ and runs/ (repeat for sweeps kept in different clones; default .)")
    ap.add_argument("--noise", type=float, default=None, help="seed noise (nats/token), drawn as a band")
    ap.add_argument("--out", default="docs/pilot")
    ap.add_argument("--n-params", default="", help="sweep=params,... for the tokens-per-parameter column")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_params = {k: int(v) for k, v in (kv.split("=") for kv in args.n_params.split(",") if kv)}  # by family
    rows = collect([Path(r) for r in (args.root or ["."])], args.sweeps)
    write_table(rows, n_params, out)
    plot(rows, out)
    plot_gap(rows, n_params, out, args.noise)
    print((out / "pilot.md").read_text())


if __name__ == "__main__":
    main()
