"""Figures for the sweep report.  Every plot shows the measured points; fitted
curves are drawn on top, never instead.  Each figure is written as PNG (for
the markdown report) and PDF (for papers); the ``plot_*`` functions return the
PNG path, the ``*_figure`` functions build the figure (tests read its legends).

Conventions (what a paper figure needs): log ticks read 1, 2, 4, 8 or 2×10¹²,
never 10⁰ or 2×10⁰; axis labels and legends carry units (FLOPs, tokens,
nats/token); discrete quantities (budgets, µ_rec, learning rates) get discrete
colours and a legend, never a colour bar; panels that are compared share their
y range; no offset axis ("+3.05"). A fit through flagged points is drawn grey
and dashed and labelled as such on the figure.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the analysis runs on login nodes and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from analysis.isoflop.optima import BudgetOptimum
from analysis.isoflop.profiles import akima_curve  # noqa: E402
from analysis.isoflop.powerlaw import PowerLawFit  # noqa: E402
from analysis.testtime.saturation import SaturationFit  # noqa: E402

matplotlib.rcParams["axes.formatter.useoffset"] = False
LOSS_LABEL = "validation loss (nats/token)"
UNITS = {"tokens": "tokens", "train_flops": "FLOPs", "n_params": "parameters",
         "n_params_unrolled": "parameters", "flop_budget": "FLOPs"}
AXIS_UNITS = {"training tokens D": "training tokens D (tokens)", "parameters N": "parameters N (parameters)"}
OPTIMUM_UNITS = {"D*": "compute-optimal tokens D* (tokens)", "N*": "compute-optimal parameters N*",
                 "µ_rec*": "compute-optimal mean recurrence µ_rec*"}
EXTRAPOLATE = 4.0  # the power law is drawn (dashed) to this multiple of the largest budget
MAX_FIXED_TICKS = 8  # up to this many distinct sampled values are the ticks themselves

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt_num(v: float) -> str:
    """1, 2, 0.5, 250 as they are; 2×10¹², 10⁹ for large or small values (unicode, no mathtext)."""
    if not np.isfinite(v) or v == 0:
        return f"{v:g}"
    if 1e-2 <= abs(v) < 1e4:
        return f"{v:.3g}"
    exp = int(np.floor(np.log10(abs(v))))
    mant = v / 10**exp
    if abs(mant - round(mant)) < 0.05:
        mant = round(mant)
    power = f"10{str(exp).translate(_SUPERSCRIPT)}"
    return power if mant == 1 else f"{mant:g}×{power}"


def budget_label(C: float) -> str:
    return f"C = {fmt_num(C)} FLOPs"


def log_axis(ax, which: str = "x", values=None) -> None:
    """Log scale with readable ticks: the sampled values themselves when there are few (µ_rec 1, 2, 4,
    8), else 1-2-5 steps; labels by ``fmt_num``; no minor labels."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    fixed = None if values is None else np.unique(np.asarray(values, dtype=float))
    if fixed is not None and 2 <= fixed.size <= MAX_FIXED_TICKS:
        axis.set_major_locator(ticker.FixedLocator(fixed))
    else:  # every integer mantissa within a decade, 1-2-5 steps up to 2 decades, 1-3 up to 4, then powers
        lo, hi = (ax.get_xlim() if which == "x" else ax.get_ylim())
        decades = np.log10(hi / lo) if lo > 0 and hi > lo else 1.0
        subs = (tuple(range(1, 10)) if decades < 1 else (1.0, 2.0, 5.0) if decades < 2
                else (1.0, 3.0) if decades < 4 else (1.0,))
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_num(v)))
    axis.set_minor_formatter(ticker.NullFormatter())


def discrete_colors(values, cmap: str = "viridis") -> dict:
    """One colour per distinct value, evenly spaced along the colormap (ordered by value)."""
    uniq = sorted({float(v) for v in values})
    cm = plt.get_cmap(cmap)
    if len(uniq) == 1:
        return {uniq[0]: cm(0.35)}
    return {v: cm(0.9 * i / (len(uniq) - 1)) for i, v in enumerate(uniq)}


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
    colors = discrete_colors(budgets, "plasma")
    return lambda b: colors[float(b)]


def draw_isoflop(ax, optima: list[BudgetOptimum], xlabel: str) -> None:
    """Loss vs allocation variable per budget: points, Akima spline (the estimate, solid) with its
    minimum (star: filled = used, hollow = flagged) and run-bootstrap 95 % bar, parabola (dotted)."""
    color = _budget_colors([o.budget for o in optima])
    values = []
    for o in optima:
        c = color(o.budget)
        f = o.fit
        xs_pts = np.exp(f.x)
        values.extend(xs_pts)
        ax.scatter(xs_pts, f.y, color=c, s=22, zorder=3, label=budget_label(o.budget))
        for p in o.points_excluded:  # QC-flagged points: shown, crossed, not fitted
            ax.scatter([p["value"]], [p["loss"]], marker="x", color=c, s=36, zorder=3)
        spline = akima_curve(f.x, f.y)
        if spline is not None:
            ax.plot(np.exp(spline[0]), spline[1], color=c, lw=1.4)
        if f.coef is not None:
            xs = np.linspace(f.x.min(), f.x.max(), 200)
            ax.plot(np.exp(xs), f.predict(xs), color=c, lw=0.9, ls=":")
        if np.isfinite(o.x_opt):
            ax.scatter([o.opt], [o.y_opt], marker="*", s=170, zorder=4, edgecolors=c,
                       facecolors=c if o.ok else "white", linewidths=1.4)
            lo, hi = o.interval()
            if np.isfinite(lo) and np.isfinite(hi):
                ax.errorbar([o.opt], [o.y_opt], xerr=[[max(o.opt - lo, 0)], [max(hi - o.opt, 0)]],
                            color=c, capsize=3, lw=1.0, zorder=3)
    log_axis(ax, "x", values)
    ax.set_xlabel(AXIS_UNITS.get(xlabel, xlabel))
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="★ optimum (hollow: flagged)", title_fontsize=7)


def isoflop_figure(optima: list[BudgetOptimum], xlabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    draw_isoflop(ax, optima, xlabel)
    ax.set_title("IsoFLOP profiles: Akima spline (solid) and its minimum ★ with 95 % run-bootstrap bar;\n"
                 "parabola dotted; × a point left out by QC", fontsize=9)
    return fig


def plot_isoflop(optima: list[BudgetOptimum], xlabel: str, stem: Path) -> Path:
    return save_figure(isoflop_figure(optima, xlabel), stem)


def _flagged_in_fit(fit: PowerLawFit, optima: list[BudgetOptimum]) -> bool:
    used = set(np.asarray(fit.C, dtype=float).tolist())
    return any(o.budget in used and not o.ok for o in optima)


def draw_powerlaw(ax, fit: PowerLawFit | None, optima: list[BudgetOptimum], ylabel: str) -> None:
    """Optima vs compute on log-log: used (filled) and left-out (hollow) optima with their 95 % bars,
    the fitted law over the budgets (solid), its extrapolation (dashed), its 95 % bootstrap band."""
    used_C = set(np.asarray(fit.C, dtype=float).tolist()) if fit is not None else set()
    groups = ((True, dict(color="C0", label="optimum (in the fit)")),
              (False, dict(color="C3", mfc="white", label="optimum left out (flagged)")))
    finite = [o for o in optima if np.isfinite(o.x_opt)]
    for in_fit, style in groups:
        group = [o for o in finite if (o.budget in used_C) == in_fit]
        if not group:
            continue
        C = np.array([o.budget for o in group])
        # the optima of the estimator the line was fitted through (the spline's or the parabola's)
        parabola = fit is not None and fit.estimator == "parabola"
        y = np.array([o.fit.opt if parabola else o.opt for o in group])
        ci = np.array([o.boot_interval("runs") if parabola else o.interval() for o in group])
        has = np.all(np.isfinite(ci), axis=1)
        yerr = np.vstack([np.where(has, y - ci[:, 0], 0), np.where(has, ci[:, 1] - y, 0)])
        ax.errorbar(C, y, yerr=np.clip(yerr, 0, None), fmt="o", capsize=3, **style)
    budgets = [o.budget for o in optima]
    if fit is not None:
        flagged = _flagged_in_fit(fit, optima)
        color = "0.5" if flagged else "C0"
        lo_ci, hi_ci = fit.boot_ci_gamma("runs")
        ci = f", 95 % [{lo_ci:.2f}, {hi_ci:.2f}]" if np.isfinite(lo_ci) else ""
        what = "fit THROUGH FLAGGED optima (biased)" if flagged else "fit"
        inside = np.geomspace(min(fit.C), max(fit.C), 60)
        beyond = np.geomspace(max(fit.C), max(fit.C) * EXTRAPOLATE, 30)
        ax.plot(inside, fit.predict(inside), color=color, lw=1.6, ls="--" if flagged else "-",
                label=f"{what}: {ylabel} ∝ C^{fit.gamma:.3f}{ci}")
        ax.plot(beyond, fit.predict(beyond), color=color, lw=1.2, ls="--",
                label=f"extrapolation (to {EXTRAPOLATE:g}× the largest budget)")
        grid = np.geomspace(min(fit.C), max(fit.C) * EXTRAPOLATE, 90)
        band = fit.band(grid, "runs")
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=color, alpha=0.18, label="95 % bootstrap band (runs)")
    else:
        ax.text(0.5, 0.5, "no power law: too few clean budgets", transform=ax.transAxes,
                ha="center", va="center", color="C3", fontsize=9)
    log_axis(ax, "x", budgets + ([max(budgets) * EXTRAPOLATE] if fit is not None else []))
    log_axis(ax, "y")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(OPTIMUM_UNITS.get(ylabel, ylabel))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")


def powerlaw_figure(fit: PowerLawFit | None, optima: list[BudgetOptimum], ylabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    draw_powerlaw(ax, fit, optima, ylabel)
    return fig


def plot_powerlaw(fit: PowerLawFit | None, optima: list[BudgetOptimum], ylabel: str,
                  stem: Path) -> Path:
    return save_figure(powerlaw_figure(fit, optima, ylabel), stem)


def isoflop_summary_figure(panels: list[tuple[list[BudgetOptimum], PowerLawFit | None, str, str]],
                           title: str) -> plt.Figure:
    """The Chinchilla-style figure of one model: per allocation axis a row with the isoFLOP curves
    coloured by budget and their optima (left) beside optimum vs compute on log-log with the fitted
    law, its 95 % band and its extrapolation (right). panels: (optima, law, xlabel, optimum label)."""
    fig, axes = plt.subplots(len(panels), 2, figsize=(12.0, 4.4 * len(panels)), squeeze=False,
                             layout="constrained")
    for row, (optima, law, xlabel, ylabel) in zip(axes, panels):
        draw_isoflop(row[0], optima, xlabel)
        draw_powerlaw(row[1], law, optima, ylabel)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_isoflop_summary(panels, title: str, stem: Path) -> Path:
    return save_figure(isoflop_summary_figure(panels, title), stem)


def testtime_figure(df: pd.DataFrame, fits: dict[str, SaturationFit]) -> plt.Figure:
    """Test-time loss vs T per run (points) with the fitted exponential, one colour per training µ_rec.

    One panel per FLOP budget (or per token count when the sweep has no budgets), all on one y range,
    so the test-time gain of each model is read against its neighbours and across budgets.
    """
    meta = df.set_index(df["run_id"].astype(str))
    facet = "flop_budget" if meta["flop_budget"].notna().any() else "tokens"
    groups = sorted(meta.loc[list(fits), facet].dropna().unique()) or [None]
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol + 0.6, 3.4 * nrow), squeeze=False,
                             sharey=True, layout="constrained")
    mus = meta.loc[list(fits), "mean_recurrence"].astype(float)
    colors = discrete_colors(mus)
    Ts = sorted({float(t) for f in fits.values() for t in f.T})
    for ax, group in zip(axes.flat, groups):
        for run_id, fit in sorted(fits.items(), key=lambda kv: float(meta.loc[kv[0], "mean_recurrence"])):
            if group is not None and meta.loc[run_id, facet] != group:
                continue
            mu = float(meta.loc[run_id, "mean_recurrence"])
            c = colors[mu]
            ax.scatter(fit.T, fit.loss, color=c, s=16, zorder=3, label=f"µ_rec = {mu:g}")
            if fit.fitted:
                ts = np.geomspace(fit.T.min(), fit.T.max(), 200)
                ax.plot(ts, fit.predict(ts), color=c, lw=1.1, ls="-" if fit.z_identified else ":")
        unit = "FLOPs" if facet == "flop_budget" else "tokens"
        ax.set_title(f"{'C' if facet == 'flop_budget' else 'D'} = {fmt_num(group)} {unit}"
                     if group is not None else "all runs", fontsize=9)
        log_axis(ax, "x", Ts)
        ax.set_xlabel("test-time loops T")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, title="trained at", title_fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(LOSS_LABEL)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("L(T) = L∞ + Z·exp(−zT)  (dotted: z not identified)", fontsize=9)
    return fig


def plot_testtime(df: pd.DataFrame, fits: dict[str, SaturationFit], stem: Path) -> Path:
    return save_figure(testtime_figure(df, fits), stem)


def loss_vs_figure(df: pd.DataFrame, column: str, xlabel: str,
                   color_by: str = "mean_recurrence") -> plt.Figure:
    """Final loss against one run attribute (tokens, parameters, FLOPs), log x, one colour per µ_rec."""
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    x = df[column].astype(float).to_numpy()
    y = df["loss"].astype(float).to_numpy()
    c = df[color_by].astype(float).to_numpy()
    colors = discrete_colors(c[np.isfinite(c)]) if np.isfinite(c).any() else {}
    name = "µ_rec" if color_by == "mean_recurrence" else color_by
    for v, col in colors.items():
        sel = c == v
        ax.scatter(x[sel], y[sel], color=col, s=26, zorder=3, label=f"{name} = {v:g}")
    if not colors:
        ax.scatter(x, y, color="C0", s=26, zorder=3)
    unit = UNITS.get(column)
    log_axis(ax, "x", x if np.unique(x).size <= 4 else None)
    ax.set_xlabel(f"{xlabel} ({unit})" if unit and unit not in xlabel else xlabel)
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3, which="both")
    if colors:
        ax.legend(fontsize=7)
    return fig


def plot_loss_vs(df: pd.DataFrame, column: str, xlabel: str, stem: Path,
                 color_by: str = "mean_recurrence") -> Path:
    return save_figure(loss_vs_figure(df, column, xlabel, color_by), stem)


def plot_stability(table: pd.DataFrame, hist: pd.DataFrame, stem: Path) -> Path:
    """Training loss, recurrent state norm and ρ(Ā) over steps, one column per injection, coloured by
    learning rate; a cross marks where a diverged run stopped, a dashed line ρ = 1."""
    injections = sorted(table["injection"].dropna().unique())
    panels = (("train/loss", "train loss (nats/token)", "linear"),
              ("monitor/state_norm", "recurrent state norm ‖h_T‖", "log"),
              ("monitor/rho_A", "ρ(Ā) of the injection", "linear"))
    fig, axes = plt.subplots(len(panels), len(injections), figsize=(4.0 * len(injections) + 1.2, 9.0),
                             squeeze=False, sharex="col", layout="constrained")
    colors = discrete_colors(table["lr"].astype(float), "plasma")
    for col, inj in enumerate(injections):
        for _, run in table[table["injection"] == inj].iterrows():
            c = colors[float(run["lr"])]
            h = hist[hist["run_id"] == run["run_id"]]
            for row, (key, _, _) in enumerate(panels):
                k = h[h["key"] == key]
                ax = axes[row, col]
                # An exploding state reaches ~1e308; log-scale autoscaling overflows on that, so clip.
                values = np.clip(k["value"].to_numpy(dtype=float), None, 1e200)
                ax.plot(k["step"], values, color=c, lw=1.0, marker=".", ms=3,
                        label=f"lr = {float(run['lr']):g}")
                if run["outcome"] == "diverged" and len(k):
                    ax.scatter(k["step"].iloc[-1], values[-1], marker="x", color=c, s=60, zorder=4)
        axes[0, col].set_title(f"injection = {inj}", fontsize=9)
        for row, (_, label, scale) in enumerate(panels):
            axes[row, col].set_ylabel(label)
            axes[row, col].set_yscale(scale)
            axes[row, col].grid(alpha=0.3)
        axes[-1, col].axhline(1.0, color="grey", lw=0.8, ls="--")
        axes[-1, col].set_xlabel("step")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    order = sorted(uniq, key=lambda t: float(t.split("= ")[1]))
    fig.legend([uniq[k] for k in order], order, loc="outside right upper", fontsize=7, title="learning rate")
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
    left.set_xlabel("predicted loss (nats/token)")
    left.set_ylabel("observed loss (nats/token)")
    left.set_title(f"{name}: predicted vs observed")
    left.legend(fontsize=8)
    right.scatter(D, resid, c=D, cmap="viridis", norm=norm, s=20, zorder=3)
    right.axhline(0, color="k", lw=0.8)
    log_axis(right, "x")
    right.set_xlabel("training tokens D (tokens)")
    right.set_ylabel("ln observed − ln predicted")
    right.set_title(f"residuals (RMS {np.sqrt(np.mean(resid ** 2)):.2g})")
    bar = fig.colorbar(points, ax=right, label="training tokens D (tokens)")
    if isinstance(norm, LogNorm):
        bar.ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_num(v)))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    return save_figure(fig, stem)


def holdout_figure(rows: list[dict], axis_label: str, band_pct: float | None = None) -> plt.Figure:
    """Held-out budgets: predicted against observed compute-optimal loss (left) and allocation (right),
    one marker per approach, the line y = x; band_pct shades ±band_pct % around it on the loss panel
    (the paper's held-out error, for comparison)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.4))
    approaches = list(dict.fromkeys(r["approach"] for r in rows))
    markers = dict(zip(approaches, "osD^v<>"))
    for i, name in enumerate(approaches):
        mine = [r for r in rows if r["approach"] == name]
        style = dict(marker=markers[name], color=f"C{i}", ls="none", ms=7, label=name, alpha=0.85)
        left.plot([r["observed_loss"] for r in mine], [r["predicted_loss"] for r in mine], **style)
        right.plot([r["observed_optimum"] for r in mine], [r["predicted_optimum"] for r in mine], **style)
    # The points of one budget sit close together: linear axes, the y = x line a little beyond them.
    for ax, keys, pad in ((left, ("observed_loss", "predicted_loss"), 0.01),
                          (right, ("observed_optimum", "predicted_optimum"), 0.1)):
        values = np.array([r[k] for r in rows for k in keys], dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            lims = np.array([values.min() / (1 + pad), values.max() * (1 + pad)])
            ax.plot(lims, lims, color="k", lw=0.8, label="y = x")
            if ax is left and band_pct:
                ax.fill_between(lims, lims * (1 - band_pct / 100), lims * (1 + band_pct / 100), color="0.85",
                                label=f"±{band_pct:g} % (paper's held-out error)")
            ax.set_xlim(*lims)
            ax.set_ylim(*lims)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.yaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_num(v)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_num(v)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    left.set_xlabel("observed compute-optimal loss (nats/token)")
    left.set_ylabel("predicted compute-optimal loss (nats/token)")
    left.set_title("held-out budgets: compute-optimal loss", fontsize=10)
    right.set_xlabel(f"observed optimum {axis_label}")
    right.set_ylabel(f"predicted optimum {axis_label}")
    right.set_title("held-out budgets: compute-optimal allocation", fontsize=10)
    return fig


def plot_holdout(rows: list[dict], axis_label: str, stem: Path, band_pct: float | None = None) -> Path:
    return save_figure(holdout_figure(rows, axis_label, band_pct), stem)
