"""Figures for the sweep report.  Every plot shows the measured points; fitted
curves are drawn on top, never instead.  Each figure is written as PNG (for
the markdown report) and PDF (for papers); functions return the PNG path.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the analysis runs on login nodes and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from analysis.isoflop import BudgetOptimum, akima_curve  # noqa: E402
from analysis.powerlaw import PowerLawFit  # noqa: E402
from analysis.testtime import SaturationFit  # noqa: E402


def save_figure(fig: plt.Figure, stem: Path) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=130)
    fig.savefig(stem.with_suffix(".pdf"))
    plt.close(fig)
    return png


def _budget_colors(budgets: list[float]):
    norm = LogNorm(min(budgets), max(budgets)) if len(budgets) > 1 else Normalize(0, 1)
    cmap = plt.get_cmap("plasma")
    return lambda b: cmap(0.85 * norm(b)) if len(budgets) > 1 else cmap(0.3)


def plot_isoflop(optima: list[BudgetOptimum], xlabel: str, stem: Path) -> Path:
    """Loss vs allocation variable per budget: points, parabola, optimum.

    Filled stars are interior optima; hollow stars are flagged (edge of the
    grid, non-positive curvature, too few points) and sit on a grid value.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    color = _budget_colors([o.budget for o in optima])
    for o in optima:
        c = color(o.budget)
        f = o.fit
        ax.scatter(np.exp(f.x), f.y, color=c, s=22, zorder=3, label=f"C = {o.budget:.2g}")
        if f.coef is not None:
            xs = np.linspace(f.x.min(), f.x.max(), 200)
            ax.plot(np.exp(xs), f.predict(xs), color=c, lw=1.2)
        spline = akima_curve(f.x, f.y)
        if spline is not None:
            ax.plot(np.exp(spline[0]), spline[1], color=c, lw=0.9, ls=":")
            ax.scatter([o.akima_opt], [o.akima_y_opt], marker="D", s=28, zorder=4,
                       edgecolors=c, facecolors="white", linewidths=1.0)
        ax.scatter([f.opt], [f.y_opt], marker="*", s=160, zorder=4, edgecolors=c,
                   facecolors=c if f.ok else "none", linewidths=1.4)
        lo, hi = o.boot_interval("runs")
        if np.isfinite(lo) and np.isfinite(hi):  # the optimum's 95 % run-bootstrap interval
            ax.errorbar([f.opt], [f.y_opt], xerr=[[max(f.opt - lo, 0)], [max(hi - f.opt, 0)]],
                        color=c, capsize=3, lw=1.0, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("IsoFLOP profiles: parabola (solid, star) and Akima spline (dotted, diamond)\n"
                 "hollow star: flagged optimum; bar: its 95 % run-bootstrap interval", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, stem)


def plot_powerlaw(fit: PowerLawFit, optima: list[BudgetOptimum], ylabel: str,
                  stem: Path) -> Path:
    """Optima vs compute: points with per-budget run-bootstrap intervals, fitted line,
    run-bootstrap band."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    used = [o for o in optima if o.budget not in fit.excluded_budgets]
    left_out = [o for o in optima if o.budget in fit.excluded_budgets]
    for group, style in ((used, dict(color="C0", label="optimum (used)")),
                         (left_out, dict(color="C3", mfc="none", label="flagged (left out)"))):
        if not group:
            continue
        C = np.array([o.budget for o in group])
        y = np.array([o.fit.opt for o in group])
        ci = np.array([o.boot_interval("runs") for o in group])
        has_ci = np.all(np.isfinite(ci), axis=1)
        yerr = np.vstack([np.where(has_ci, y - ci[:, 0], 0), np.where(has_ci, ci[:, 1] - y, 0)])
        ax.errorbar(C, y, yerr=np.clip(yerr, 0, None), fmt="o", capsize=3, **style)
    grid = np.geomspace(min(o.budget for o in optima) / 1.5, max(o.budget for o in optima) * 1.5)
    ax.plot(grid, fit.predict(grid), color="C0", lw=1.5,
            label=f"fit: gamma = {fit.gamma:.3f}")
    band = fit.band(grid, "runs")
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color="C0", alpha=0.18,
                        label="95 % bootstrap band (runs)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, stem)


def plot_testtime(df: pd.DataFrame, fits: dict[str, SaturationFit], stem: Path) -> Path:
    """Test-time loss vs T per run (points) with the fitted exponential, coloured by mu_rec.

    One panel per FLOP budget (or per token count when the sweep has no budgets): curves of one
    budget share a scale, so the test-time gain of each model is visible next to its neighbours.
    """
    meta = df.set_index(df["run_id"].astype(str))
    facet = "flop_budget" if meta["flop_budget"].notna().any() else "tokens"
    groups = sorted(meta.loc[list(fits), facet].dropna().unique()) or [None]
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol + 1.2, 3.4 * nrow),
                             squeeze=False, layout="constrained")
    vals = meta.loc[list(fits), "mean_recurrence"].astype(float)
    norm = Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
    cmap = plt.get_cmap("viridis")
    for ax, group in zip(axes.flat, groups):
        for run_id, fit in fits.items():
            if group is not None and meta.loc[run_id, facet] != group:
                continue
            c = cmap(norm(float(meta.loc[run_id, "mean_recurrence"])))
            ax.scatter(fit.T, fit.loss, color=c, s=14, zorder=3)
            if fit.fitted:
                ts = np.linspace(fit.T.min(), fit.T.max(), 200)
                ax.plot(ts, fit.predict(ts), color=c, lw=1.1, ls="-" if fit.z_identified else ":")
        ax.set_title(f"{facet} = {group:.3g}" if group is not None else "all runs", fontsize=9)
        ax.set_xlabel("test-time loops T")
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes, label="training mean recurrence")
    fig.suptitle("L(T) = L_inf + Z exp(-zT)   (dotted: z not identified)", fontsize=9)
    return save_figure(fig, stem)


def plot_loss_vs(df: pd.DataFrame, column: str, xlabel: str, stem: Path,
                 color_by: str = "mean_recurrence") -> Path:
    """Final loss against one run attribute (tokens, parameters, FLOPs), log x."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    x = df[column].astype(float).to_numpy()
    y = df["loss"].astype(float).to_numpy()
    c = df[color_by].astype(float).to_numpy()
    sc = ax.scatter(x, y, c=c, cmap="viridis", s=26, zorder=3)
    fig.colorbar(sc, ax=ax, label=color_by)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, stem)


def plot_stability(table: pd.DataFrame, hist: pd.DataFrame, stem: Path) -> Path:
    """Training loss, recurrent state norm and ρ(Ā) over steps, one column per injection, coloured by
    learning rate; a cross marks where a diverged run stopped, a dashed line ρ = 1."""
    injections = sorted(table["injection"].dropna().unique())
    panels = (("train/loss", "train loss (nats/token)", "linear"),
              ("monitor/state_norm", "recurrent state norm ‖h_T‖", "log"),
              ("monitor/rho_A", "ρ(Ā) of the injection", "linear"))
    fig, axes = plt.subplots(len(panels), len(injections), figsize=(4.0 * len(injections) + 1.2, 9.0),
                             squeeze=False, sharex="col", layout="constrained")
    lrs = table["lr"].astype(float)
    norm = LogNorm(lrs.min(), lrs.max() if lrs.max() > lrs.min() else lrs.min() * 10)
    cmap = plt.get_cmap("plasma")
    for col, inj in enumerate(injections):
        for _, run in table[table["injection"] == inj].iterrows():
            c = cmap(norm(float(run["lr"])))
            h = hist[hist["run_id"] == run["run_id"]]
            for row, (key, _, _) in enumerate(panels):
                k = h[h["key"] == key]
                ax = axes[row, col]
                # An exploding state reaches ~1e308; log-scale autoscaling overflows on that, so clip.
                values = np.clip(k["value"].to_numpy(dtype=float), None, 1e200)
                ax.plot(k["step"], values, color=c, lw=1.0, marker=".", ms=3)
                if run["outcome"] == "diverged" and len(k):
                    ax.scatter(k["step"].iloc[-1], values[-1], marker="x", color=c, s=60, zorder=4)
        axes[0, col].set_title(f"injection = {inj}", fontsize=9)
        for row, (_, label, scale) in enumerate(panels):
            axes[row, col].set_ylabel(label)
            axes[row, col].set_yscale(scale)
            axes[row, col].grid(alpha=0.3)
        axes[-1, col].axhline(1.0, color="grey", lw=0.8, ls="--")
        axes[-1, col].set_xlabel("step")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="learning rate")
    fig.suptitle("Stability: loss, state norm and ρ(Ā) over training (x: diverged)", fontsize=9)
    return save_figure(fig, stem)


def plot_law_fit(design, predicted: np.ndarray, name: str, stem: Path) -> Path:
    """A parametric law against its data: predicted vs observed (left) and log residuals vs the
    training tokens D (right), every point shown, coloured by D."""
    observed = np.asarray(design.loss, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    D = design.raw.get("D", np.arange(observed.size, dtype=float))
    resid = np.log(observed) - np.log(predicted)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.2))
    norm = LogNorm(D.min(), D.max()) if D.min() > 0 and D.max() > D.min() else Normalize()
    points = left.scatter(predicted, observed, c=D, cmap="viridis", norm=norm, s=20, zorder=3)
    lims = [min(observed.min(), predicted.min()), max(observed.max(), predicted.max())]
    left.plot(lims, lims, color="k", lw=0.8, label="y = x")
    left.set_xlabel("predicted loss")
    left.set_ylabel("observed loss")
    left.set_title(f"{name}: predicted vs observed")
    left.legend(fontsize=8)
    right.scatter(D, resid, c=D, cmap="viridis", norm=norm, s=20, zorder=3)
    right.axhline(0, color="k", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("training tokens D")
    right.set_ylabel("ln observed − ln predicted")
    right.set_title(f"residuals (RMS {np.sqrt(np.mean(resid ** 2)):.2g})")
    fig.colorbar(points, ax=right, label="D")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    return save_figure(fig, stem)
