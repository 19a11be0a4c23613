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
from analysis import plots  # noqa: E402
from analysis.powerlaw import NoPowerLaw, powerlaw_from_optima  # noqa: E402
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
    """Per sweep and allocation axis: the power-law exponent with its 95 % run-bootstrap interval, the
    budgets in the fit and those left out (flagged optima never enter the line)."""
    rows = []
    for sid, df in sweeps.items():
        for axis, label in AXES.items():
            row = {"sweep": sid, "quantity": f"{label} ∝ C^gamma", "runs": len(df),
                   "gamma": np.nan, "95 % bootstrap (runs)": "—", "budgets used": 0, "left out": "—"}
            supported, why = isoflop.isoflop_supported(df)
            if not supported:
                row["left out"] = why
                rows.append(row)
                continue
            opt = _optima(df, axis, n_boot, seed)
            try:
                law = powerlaw_from_optima(opt)
            except NoPowerLaw as err:
                row["left out"] = str(err)
                rows.append(row)
                continue
            left = [o for o in opt if o.budget not in set(law.C.tolist())]
            row.update({"gamma": law.gamma, "budgets used": len(law.C),
                        "95 % bootstrap (runs)": interval(*law.boot_ci_gamma("runs")),
                        "left out": "; ".join(f"C={o.budget:.3g} ({', '.join(f.code for f in o.flags)})"
                                              for o in left) or "none"})
            rows.append(row)
    return pd.DataFrame(rows)


def comparison_figure(sweeps: dict[str, pd.DataFrame], seed: int = 0) -> plt.Figure:
    """Left: isoFLOP profiles (loss vs µ_rec per budget, darker = larger budget). Middle: compute-optimal
    D* vs C with each sweep's power law (hollow: flagged, left out). Right: test-time loss vs T at each
    sweep's largest budget, one line per µ_rec (nothing averaged over budgets or loop counts)."""
    fig, (iso, opt, tt) = plt.subplots(1, 3, figsize=(15.0, 4.6), layout="constrained")
    mus = sorted({float(m) for df in sweeps.values() for m in df["mean_recurrence"].dropna()})
    styles = dict(zip(mus, ["-", "--", ":", "-.", (0, (1, 3)), (0, (5, 2, 1, 2)), (0, (3, 1))] * 3))
    Ts: set[float] = set()
    for k, (sid, df) in enumerate(sweeps.items()):
        color, marker = f"C{k}", MARKERS[k % len(MARKERS)]
        budgeted = df[np.isfinite(df["flop_budget"].astype(float))]
        n_budgets = max(budgeted["flop_budget"].nunique(), 1)
        for j, (budget, grp) in enumerate(budgeted.groupby("flop_budget")):
            grp = grp.sort_values("mean_recurrence")
            iso.plot(grp["mean_recurrence"].astype(float), grp["loss"].astype(float), marker=marker,
                     color=color, alpha=0.45 + 0.55 * (j + 1) / n_budgets, lw=1, ms=5,
                     label=sid if j == 0 else None)
        optima = [o for o in _optima(df, "tokens", 0, seed) if np.isfinite(o.x_opt)]
        if optima:
            C = np.array([o.budget for o in optima])
            opt.scatter(C, [o.opt for o in optima], color=color, marker=marker, zorder=3,
                        facecolors=[color if o.ok else "white" for o in optima], label=sid)
            try:
                law = powerlaw_from_optima(optima)
            except NoPowerLaw:
                law = None
            if law is not None:
                grid = np.geomspace(law.C.min(), law.C.max() * plots.EXTRAPOLATE)
                opt.plot(grid, law.predict(grid), color=color, lw=1.2,
                         label=f"{sid}: D* ∝ C^{law.gamma:.3f}")
        long = testtime_long(df)
        if not long.empty:
            meta = df.set_index(df["run_id"].astype(str))
            long = long.assign(budget=meta.loc[long["run_id"].astype(str), "flop_budget"].to_numpy(dtype=float),
                               mu=meta.loc[long["run_id"].astype(str), "mean_recurrence"].to_numpy(dtype=float))
            top = long["budget"].max() if np.isfinite(long["budget"]).any() else np.nan
            sel = long[long["budget"] == top] if np.isfinite(top) else long
            for mu, grp in sel.groupby("mu"):
                grp = grp.sort_values("T")
                Ts.update(grp["T"].astype(float))
                tt.plot(grp["T"], grp["loss"], color=color, marker=marker, ms=4, lw=1.1, ls=styles[float(mu)])
            tt.plot([], [], color=color, marker=marker, label=sid)
    for mu in mus:
        tt.plot([], [], color="0.3", ls=styles[mu], label=f"µ_rec = {mu:g}")
    plots.log_axis(iso, "x", mus)
    iso.set(xlabel="mean recurrence µ_rec", ylabel=plots.LOSS_LABEL, title="isoFLOP profiles (darker: larger budget)")
    plots.log_axis(opt, "x")
    plots.log_axis(opt, "y")
    opt.set(xlabel="training compute C (FLOPs)", ylabel="compute-optimal tokens D* (tokens)",
            title="compute-optimal tokens (hollow: flagged, left out)")
    if Ts:
        plots.log_axis(tt, "x", sorted(Ts))
    tt.set(xlabel="test-time loops T", ylabel=plots.LOSS_LABEL,
           title="test-time loss at each sweep's largest budget")
    for ax in (iso, opt, tt):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def plot_comparison(sweeps: dict[str, pd.DataFrame], stem: Path, seed: int = 0) -> Path:
    return plots.save_figure(comparison_figure(sweeps, seed), stem)


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
        "curvature) are left out of the line, as in the sweep report; the table names them.",
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
