"""Two (or more) sweeps on one figure: python -m analysis.compare --sweeps a,b --tracking-uri URI --out DIR

For a change of recipe (injection, optimizer, data) the question is whether the compute-optimal
allocation and the losses moved. Each sweep is drawn in its own colour and marker over the same axes:
isoFLOP profiles, the compute-optimal µ_rec* and D* with their power laws, and test-time loss vs T.
The table gives each sweep's exponents with run-bootstrap intervals, so a shift can be read against
the uncertainty, not just by eye.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import isoflop  # noqa: E402
from analysis.markdown import figure_link, fmt, interval, table  # noqa: E402
from analysis.plots import save_figure  # noqa: E402
from analysis.powerlaw import powerlaw_from_optima  # noqa: E402
from analysis.report import NoRunsError  # noqa: E402
from analysis.runs import load_runs, split_usable, testtime_long  # noqa: E402

AXES = {"mean_recurrence": "mu_rec*", "tokens": "D*"}
MARKERS = "osD^vP*X"


def load_sweeps(tracking_uri: str, experiment: str, sweep_ids: list[str]) -> dict[str, pd.DataFrame]:
    """sweep id -> its usable runs; NoRunsError naming the sweep that has none."""
    out = {}
    for sid in sweep_ids:
        usable, _ = split_usable(load_runs(tracking_uri, experiment, sid))
        if usable.empty:
            raise NoRunsError(f"sweep {sid!r} in experiment {experiment!r} has no finished runs")
        out[sid] = usable
    return out


def _optima(df: pd.DataFrame, axis: str, n_boot: int, seed: int) -> list[isoflop.BudgetOptimum]:
    return isoflop.isoflop_optima(df, axis, n_boot=n_boot, rng=np.random.default_rng(seed))


def exponent_table(sweeps: dict[str, pd.DataFrame], n_boot: int, seed: int) -> pd.DataFrame:
    """Per sweep and allocation axis: the power-law exponent with its 95 % run-bootstrap interval."""
    rows = []
    for sid, df in sweeps.items():
        for axis, label in AXES.items():
            row = {"sweep": sid, "quantity": f"{label} ∝ C^gamma", "runs": len(df),
                   "gamma": np.nan, "95 % bootstrap (runs)": "—", "budgets used": 0}
            supported, _ = isoflop.isoflop_supported(df)
            opt = _optima(df, axis, n_boot, seed) if supported else []
            fitted = [o for o in opt if np.isfinite(o.fit.x_opt)]
            if len({o.budget for o in fitted}) >= 2:
                law = powerlaw_from_optima(fitted)
                row.update({"gamma": law.gamma, "budgets used": len(law.C),
                            "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs"))})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(sweeps: dict[str, pd.DataFrame], stem: Path, seed: int = 0) -> Path:
    """Left: isoFLOP profiles (loss vs µ_rec per budget). Middle: compute-optimal D* vs C with each
    sweep's power law. Right: mean test-time loss vs T (when logged). Every run is a point."""
    fig, (iso, opt, tt) = plt.subplots(1, 3, figsize=(15.0, 4.4))
    for k, (sid, df) in enumerate(sweeps.items()):
        color, marker = f"C{k}", MARKERS[k % len(MARKERS)]
        budgeted = df[np.isfinite(df["flop_budget"].astype(float))]
        for j, (budget, grp) in enumerate(budgeted.groupby("flop_budget")):
            grp = grp.sort_values("mean_recurrence")
            iso.plot(grp["mean_recurrence"].astype(float), grp["loss"].astype(float), marker=marker,
                     color=color, alpha=0.45 + 0.55 * (j + 1) / budgeted["flop_budget"].nunique(),
                     lw=1, ms=5, label=f"{sid}" if j == 0 else None)
        optima = [o for o in _optima(df, "tokens", 0, seed) if np.isfinite(o.fit.x_opt)]
        if optima:
            C = np.array([o.budget for o in optima])
            opt.scatter(C, [o.fit.opt for o in optima], color=color, marker=marker, zorder=3,
                        facecolors=[color if o.fit.ok else "none" for o in optima], label=sid)
            if len(set(C)) >= 2:
                law = powerlaw_from_optima(optima)
                grid = np.geomspace(C.min() / 1.3, C.max() * 1.3)
                opt.plot(grid, law.predict(grid), color=color, lw=1.2,
                         label=f"{sid}: gamma = {law.gamma:.3f}")
        long = testtime_long(df)
        if not long.empty:
            mean = long.groupby("T")["loss"].mean()
            tt.plot(mean.index, mean.values, marker=marker, color=color, label=sid)
            tt.scatter(long["T"], long["loss"], color=color, s=6, alpha=0.35)
    iso.set(xscale="log", xlabel="mean recurrence mu_rec", ylabel="validation loss",
            title="isoFLOP profiles (darker: larger budget)")
    opt.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="D* (tokens)",
            title="compute-optimal tokens (hollow: flagged)")
    tt.set(xscale="log", xlabel="test-time loops T", ylabel="validation loss",
           title="test-time loss: mean line, runs as dots")
    for ax in (iso, opt, tt):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, stem)


def compare(tracking_uri: str, experiment: str, sweep_ids: list[str], out_dir: str | Path,
            n_boot: int = 200, seed: int = 0) -> Path:
    """Write compare.md and its figure for the sweeps; returns the markdown's path."""
    if len(sweep_ids) < 2:
        raise ValueError(f"SWEEPS needs at least two sweep ids separated by commas; got {sweep_ids}")
    sweeps = load_sweeps(tracking_uri, experiment, sweep_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(sweeps, out_dir / "figures" / "compare", seed)
    best = pd.DataFrame([{"sweep": sid, "runs": len(df), "best loss": fmt(df["loss"].min()),
                          "median loss": fmt(df["loss"].median())} for sid, df in sweeps.items()])
    text = "\n\n".join([
        f"# Sweep comparison: {', '.join(sweep_ids)}",
        f"Experiment `{experiment}`, store `{tracking_uri}`. Only finished, non-diverged runs.",
        table(best),
        "## Compute-optimal exponents\n\nPer sweep, parabola optima per budget and a power law over "
        f"budgets; {n_boot} run-bootstrap resamples within each budget. Flagged optima (grid edge, weak "
        "curvature) are left out of the line, as in the sweep report.",
        table(exponent_table(sweeps, n_boot, seed)),
        figure_link(png, out_dir, "sweeps compared"),
    ]) + "\n"
    path = out_dir / "compare.md"
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--sweeps", required=True, help="comma-separated sweep ids, e.g. isoflop,isoflop-muon")
    p.add_argument("--out", default=None, help="output folder (default reports/compare-<a>-vs-<b>)")
    p.add_argument("--n-boot", type=int, default=200)
    args = p.parse_args(argv)
    ids = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    out = args.out or f"reports/compare-{'-vs-'.join(ids)}"
    try:
        print(compare(args.tracking_uri, args.experiment, ids, out, n_boot=args.n_boot))
    except (NoRunsError, ValueError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
