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
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.isoflop import optima  # noqa: E402
from analysis.report.markdown import figure_link, fmt, interval, table  # noqa: E402
from analysis.report import figures  # noqa: E402
from analysis.isoflop.approach2 import AxisResult, approach2  # noqa: E402
from analysis.options import MIN_BUDGETS, Options  # noqa: E402
from analysis.runs import NoRunsError, load_runs, split_usable, testtime_long  # noqa: E402
from analysis.runs.store import check_readable_store  # noqa: E402
from tracking_contract import TrackingError  # noqa: E402

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


def sweep_axes(df: pd.DataFrame, sid: str, opts: Options) -> dict[str, AxisResult | str]:
    """Per allocation axis: the report's Approach 2 on this sweep (same QC, --min-budgets and
    --keep-flagged), or why the axis is not supported."""
    rng = np.random.default_rng(opts.seed)
    out: dict[str, AxisResult | str] = {}
    for axis in AXES:
        supported, why = optima.isoflop_supported(df, axis)
        out[axis] = approach2(df, sid, axis, opts, rng) if supported else why
    return out


def exponent_table(sweeps: dict[str, pd.DataFrame], n_boot: int, seed: int,
                   opts: Options | None = None) -> pd.DataFrame:
    """Per sweep and allocation axis: the power-law exponent with its 95 % run-bootstrap interval, the
    budgets in the fit and those left out (flagged optima never enter the line unless --keep-flagged)."""
    opts = replace(opts or Options(), n_boot=n_boot, seed=seed)
    rows = []
    for sid, df in sweeps.items():
        for axis, r in sweep_axes(df, sid, opts).items():
            row = {"sweep": sid, "quantity": f"{AXES[axis]} ∝ C^gamma", "runs": len(df),
                   "gamma": np.nan, "estimator": "—", "95 % bootstrap (runs)": "—", "budgets used": 0, "left out": "—"}
            if isinstance(r, str):
                row["left out"] = r
            elif r.law is None:
                row["left out"] = r.reason
            else:
                left = r.budgets_excluded()
                row.update({"gamma": r.law.gamma, "estimator": r.estimator, "budgets used": len(r.law.C),
                            "95 % bootstrap (runs)": interval(*r.interval),
                            "left out": "; ".join(f"C={float(c):.3g} ({', '.join(x.split(':')[0] for x in why)})"
                                                  for c, why in left.items()) or "none"})
            rows.append(row)
    return pd.DataFrame(rows)


def comparison_figure(sweeps: dict[str, pd.DataFrame], seed: int = 0, opts: Options | None = None) -> plt.Figure:
    """Left: isoFLOP profiles (loss vs µ_rec per budget, darker = larger budget). Middle: compute-optimal
    D* vs C with each sweep's power law (hollow: flagged, left out). Right: test-time loss vs T at each
    sweep's largest budget, one line per µ_rec (nothing averaged over budgets or loop counts)."""
    opts = replace(opts or Options(), seed=seed)
    fig, (iso, opt, tt) = plt.subplots(1, 3, figsize=(17.0, 4.6), layout="constrained")
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
        tokens = sweep_axes(df, sid, replace(opts, n_boot=0))["tokens"]
        optima = [o for o in tokens.optima if np.isfinite(o.x_opt)] if not isinstance(tokens, str) else []
        if optima:
            C = np.array([o.budget for o in optima])
            opt.scatter(C, [o.opt for o in optima], color=color, marker=marker, zorder=3,
                        facecolors=[color if o.ok else "white" for o in optima], label=sid)
            law = tokens.law  # the report's line: clean budgets only (unless --keep-flagged)
            if law is not None:
                grid = np.geomspace(law.C.min(), law.C.max() * figures.EXTRAPOLATE)
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
    figures.log_axis(iso, "x", mus)
    iso.set(xlabel="mean recurrence µ_rec", ylabel=figures.LOSS_LABEL, title="isoFLOP profiles (darker: larger budget)")
    figures.log_axis(opt, "x")
    figures.log_axis(opt, "y")
    opt.set(xlabel="training compute C (FLOPs)", ylabel="compute-optimal tokens D* (tokens)",
            title="compute-optimal tokens (hollow: flagged, left out)")
    if Ts:
        figures.log_axis(tt, "x", sorted(Ts))
    tt.set(xlabel="test-time loops T", ylabel=figures.LOSS_LABEL,
           title="test-time loss at each sweep's largest budget")
    for ax in (iso, opt, tt):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            figures.legend_outside(ax)
    return fig


def plot_comparison(sweeps: dict[str, pd.DataFrame], stem: Path, seed: int = 0,
                    opts: Options | None = None) -> Path:
    return figures.save_figure(comparison_figure(sweeps, seed, opts), stem)


def compare(tracking_uri: str, experiment: str, sweep_ids: list[str], out_dir: str | Path,
            n_boot: int = 200, seed: int = 0, opts: Options | None = None) -> Path:
    """Write compare.md and its figure for the sweeps; returns the markdown's path.

    opts: the report's settings (--min-budgets, --keep-flagged); n_boot and seed override its own."""
    opts = replace(opts or Options(), n_boot=n_boot, seed=seed)
    if len(sweep_ids) < 2:
        raise ValueError(f"SWEEPS needs at least two sweep ids separated by commas; got {sweep_ids}")
    check_readable_store(tracking_uri)
    sweeps = load_sweeps(tracking_uri, experiment, sweep_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(sweeps, out_dir / "figures" / "compare", seed, opts)
    best = pd.DataFrame([{"sweep": sid, "runs": len(df), "best loss": fmt(df["loss"].min()),
                          "median loss": fmt(df["loss"].median())} for sid, df in sweeps.items()])
    text = "\n\n".join([
        f"# Sweep comparison: {', '.join(sweep_ids)}",
        f"Experiment `{experiment}`, store `{tracking_uri}`. Only finished, non-diverged runs.",
        table(best),
        "## Compute-optimal exponents\n\nPer sweep, the sweep report's Approach 2: per-budget optima from "
        "the estimator (spline minimum or parabola vertex) measured better on the sweep's grid, "
        f"and a power law over at least {opts.min_budgets} clean budgets; {n_boot} run-bootstrap "
        "resamples within each budget. "
        + ("QC-flagged optima are kept (--keep-flagged). " if opts.keep_flagged else
           "QC-flagged optima (grid edge, weak curvature, ...) are left out of the line; the table names them."),
        table(exponent_table(sweeps, n_boot, seed, opts)),
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
    p.add_argument("--min-budgets", type=int, default=MIN_BUDGETS,
                   help="fewest clean budgets a power law is fitted through (default %(default)s)")
    p.add_argument("--keep-flagged", action="store_true",
                   help="keep QC-flagged points and budgets in the power laws (they are still reported)")
    args = p.parse_args(argv)
    if args.min_budgets < 2:
        p.error(f"--min-budgets {args.min_budgets}: a power law needs at least 2 budgets")
    opts = Options(n_boot=args.n_boot, min_budgets=args.min_budgets, keep_flagged=args.keep_flagged)
    ids = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    out = args.out or f"reports/compare-{'-vs-'.join(ids)}"
    try:
        print(compare(args.tracking_uri, args.experiment, ids, out, n_boot=args.n_boot, opts=opts))
    except (NoRunsError, ValueError, LookupError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
