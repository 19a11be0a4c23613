"""Figures for the sweep report.  Every plot shows the measured points; fitted
curves are drawn on top, never instead.  Each figure is written as PNG (for
the markdown report) and PDF (for papers); the ``plot_*`` functions return the
PNG path, the ``*_figure`` functions build the figure (tests read its legends).

Conventions (what a paper figure needs): ticks are round values read plainly
(1, 2, 4, 8, 2×10¹²; never 10⁰, 2.05696×10⁵ or an offset "+3.05"): every axis
goes through ``plain_ticks``; sampled values are the ticks only when they are
round. Axis labels and legends carry units (FLOPs, tokens, nats/token). Colour
carries a variable the axes do not show (the budget, µ_rec, the learning rate),
as discrete colours with a legend, never a colour bar; every point can be
traced to its budget and µ_rec. Legends sit outside the axes, so they cover
neither data nor text. Panels that are compared share their axes. A fit
through flagged points is drawn grey and dashed and labelled as such.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the analysis runs on login nodes and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

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
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"  # 1000, not 1e+03
    exp = int(np.floor(np.log10(abs(v))))
    mant = v / 10**exp
    if abs(mant - round(mant)) < 0.05:
        mant = round(mant)
    power = f"10{str(exp).translate(_SUPERSCRIPT)}"
    return power if mant == 1 else f"{mant:g}×{power}"


def budget_label(C: float) -> str:
    return f"C = {fmt_num(C)} FLOPs"


def is_round(v: float) -> bool:
    """A value a tick may show as it is: at most two significant digits (2, 12, 2×10¹², 0.25), unlike a
    sampled 205,696 parameters or a jittered 5.61×10¹⁸ FLOPs."""
    if not np.isfinite(v) or v == 0:
        return True
    mant = abs(v) / 10 ** np.floor(np.log10(abs(v)))
    return abs(mant * 10 - round(mant * 10)) < 1e-6


def fmt_tick(v: float, log: bool) -> str:
    """A tick label: ``fmt_num`` on log axes (2×10⁵, 10⁹); on linear axes the value as written by hand
    (0.005, −0.015, 3.05), never in powers of ten beside plain neighbours."""
    if log:
        return fmt_num(v)
    v = round(float(v), 12)
    return f"{v:.6g}".replace("-", "−") if v != 0 else "0"


def plain_ticks(axis, minor: bool = True) -> None:
    """The one tick formatter of every figure (``fmt_tick``): plain labels, no offset, and (minor=True)
    no minor labels. Call it after the axis scale is set."""
    log = axis.get_scale() == "log"
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_tick(v, log)))
    if minor:
        axis.set_minor_formatter(ticker.NullFormatter())


def log_axis(ax, which: str = "x", values=None) -> None:
    """Log scale with readable ticks: the sampled values themselves when there are few and they are
    round (µ_rec 1, 2, 4, 8), else 1-2-5 steps; labels by ``plain_ticks``; no minor labels."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    fixed = None if values is None else np.unique(np.asarray(values, dtype=float))
    if fixed is not None and 2 <= fixed.size <= MAX_FIXED_TICKS and all(is_round(v) for v in fixed):
        axis.set_major_locator(ticker.FixedLocator(fixed))
    else:  # every integer mantissa within a decade, 1-2-5 steps up to 2 decades, 1-3 up to 4, then powers
        lo, hi = (ax.get_xlim() if which == "x" else ax.get_ylim())
        decades = np.log10(hi / lo) if lo > 0 and hi > lo else 1.0
        # below half a decade every mantissa (else too few ticks), below one 1-2-3-5 (1-9 would crowd)
        subs = (tuple(range(1, 10)) if decades < 0.5 else (1.0, 2.0, 3.0, 5.0) if decades < 1
                else (1.0, 2.0, 5.0) if decades < 2
                else (1.0, 3.0) if decades < 4 else (1.0,))
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    plain_ticks(axis)


def legend_outside(ax, handles=None, labels=None, **kw):
    """The legend to the right of the axes, top-aligned: it can cover neither data nor the text drawn
    on the axes (the layout engine, or save_figure's tight bounding box, makes room for it)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))  # one entry per label, first handle wins
    kw = {"fontsize": 7, "title_fontsize": 7, "frameon": False, **kw}
    return ax.legend(list(uniq.values()), list(uniq.keys()), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0, **kw)


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
    # tight: legends outside the axes are part of the figure, never cut off
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return png


def _budget_colors(budgets: list[float]):
    colors = discrete_colors(budgets, "plasma")
    return lambda b: colors[float(b)]


MU_MARKERS = "o^sDvPXhd<>p"  # no "*": the star marks an optimum


def mu_markers(mus) -> dict[float, str]:
    """One marker shape per µ_rec (ordered by value), so a point is traced to its µ_rec where the x-axis
    is not µ_rec (loss vs tokens or parameters: colour is the budget, shape the µ_rec)."""
    return {m: MU_MARKERS[i % len(MU_MARKERS)] for i, m in enumerate(sorted({float(v) for v in mus}))}


def draw_isoflop(ax, optima: list[BudgetOptimum], xlabel: str, mu_of: dict[str, float] | None = None) -> None:
    """Loss vs allocation variable per budget: points, Akima spline (the estimate, solid) with its
    minimum (star: filled = used, hollow = flagged) and run-bootstrap 95 % bar, parabola (dotted).
    Colour is the budget; mu_of (run id -> µ_rec) gives each point its µ_rec's marker shape, with a
    legend of its own, unless the x-axis is µ_rec itself."""
    color = _budget_colors([o.budget for o in optima])
    mu_of = {str(k): float(v) for k, v in (mu_of or {}).items() if np.isfinite(v)}
    ids = [str(r) for o in optima for r in list(o.run_ids) + [p["run_id"] for p in o.points_excluded]]
    mus = {mu_of[r] for r in ids if r in mu_of}
    shapes = mu_markers(mus) if len(mus) > 1 and "µ_rec" not in xlabel and "recurrence" not in xlabel else {}
    marker = (lambda r: shapes.get(mu_of.get(str(r), np.nan), "o"))
    values = []
    for o in optima:
        c = color(o.budget)
        f = o.fit
        xs_pts = np.exp(o.x)  # every kept run, replicates (seeds) too
        values.extend(xs_pts)
        ax.plot([], [], "o", color=c, ms=5, label=budget_label(o.budget))  # the legend's budget entry
        for x_, y_, r in zip(xs_pts, o.y, o.run_ids):
            ax.scatter([x_], [y_], color=c, s=30, zorder=3, marker=marker(r))
        for p in o.points_excluded:  # QC-flagged points: shown, crossed, not fitted
            ax.scatter([p["value"]], [p["loss"]], marker="x", color=c, s=36, zorder=3)
        spline = akima_curve(o.x, o.y)  # through the size means
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
    for m, shape in shapes.items():
        ax.plot([], [], shape, color="0.3", mfc="none", ms=5, label=f"µ_rec = {m:g}")
    log_axis(ax, "x", values)
    plain_ticks(ax.yaxis, minor=False)
    ax.set_xlabel(AXIS_UNITS.get(xlabel, xlabel))
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax, title="★ optimum (hollow: flagged)")


def isoflop_figure(optima: list[BudgetOptimum], xlabel: str, mu_of: dict[str, float] | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    draw_isoflop(ax, optima, xlabel, mu_of)
    est = optima[0].estimator if optima else "parabola"
    ax.set_title(f"IsoFLOP profiles: Akima spline (solid), parabola (dotted); ★ the {est} optimum with its "
                 "95 % bar;\n× a run the QC stage left out", fontsize=9)
    return fig


def plot_isoflop(optima: list[BudgetOptimum], xlabel: str, stem: Path,
                 mu_of: dict[str, float] | None = None) -> Path:
    return save_figure(isoflop_figure(optima, xlabel, mu_of), stem)


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
        # the optima of the estimator the line was fitted through (one estimator per figure)
        est = fit.estimator if fit is not None else None
        y = np.array([np.exp(o.minima[est][0]) if est in o.minima else o.opt for o in group])
        ci = np.array([o.boot_interval(est) if est else o.interval() for o in group])
        has = np.all(np.isfinite(ci), axis=1)
        yerr = np.vstack([np.where(has, y - ci[:, 0], 0), np.where(has, ci[:, 1] - y, 0)])
        ax.errorbar(C, y, yerr=np.clip(yerr, 0, None), fmt="o", capsize=3, **style)
    budgets = [o.budget for o in optima]
    if fit is not None:
        flagged = _flagged_in_fit(fit, optima)
        color = "0.5" if flagged else "C0"
        lo_ci, hi_ci = fit.boot_ci_gamma()
        ci = f", 95 % [{lo_ci:.2f}, {hi_ci:.2f}]" if np.isfinite(lo_ci) else ""
        what = "fit THROUGH FLAGGED optima (biased)" if flagged else "fit"
        inside = np.geomspace(min(fit.C), max(fit.C), 60)
        beyond = np.geomspace(max(fit.C), max(fit.C) * EXTRAPOLATE, 30)
        ax.plot(inside, fit.predict(inside), color=color, lw=1.6, ls="--" if flagged else "-",
                label=f"{what}: {ylabel} ∝ C^{fit.gamma:.3f}{ci}")
        ax.plot(beyond, fit.predict(beyond), color=color, lw=1.2, ls="--",
                label=f"extrapolation (to {EXTRAPOLATE:g}× the largest budget)")
        grid = np.geomspace(min(fit.C), max(fit.C) * EXTRAPOLATE, 90)
        band = fit.band(grid)
        if band is not None:
            ax.fill_between(grid, band[0], band[1], color=color, alpha=0.18, label="95 % band (noise draws)")
    else:
        ax.set_title("no power law: too few clean budgets", color="C3", fontsize=9)  # above, not over, the data
    log_axis(ax, "x", budgets + ([max(budgets) * EXTRAPOLATE] if fit is not None else []))
    log_axis(ax, "y")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(OPTIMUM_UNITS.get(ylabel, ylabel))
    legend_outside(ax)
    ax.grid(alpha=0.3, which="both")


def powerlaw_figure(fit: PowerLawFit | None, optima: list[BudgetOptimum], ylabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    draw_powerlaw(ax, fit, optima, ylabel)
    return fig


def plot_powerlaw(fit: PowerLawFit | None, optima: list[BudgetOptimum], ylabel: str,
                  stem: Path) -> Path:
    return save_figure(powerlaw_figure(fit, optima, ylabel), stem)


def isoflop_summary_figure(panels: list[tuple[list[BudgetOptimum], PowerLawFit | None, str, str]],
                           title: str, mu_of: dict[str, float] | None = None) -> plt.Figure:
    """The Chinchilla-style figure of one model: per allocation axis a row with the isoFLOP curves
    coloured by budget and their optima (left) beside optimum vs compute on log-log with the fitted
    law, its 95 % band and its extrapolation (right). panels: (optima, law, xlabel, optimum label)."""
    fig, axes = plt.subplots(len(panels), 2, figsize=(14.0, 4.4 * len(panels)), squeeze=False,
                             layout="constrained")
    for row, (optima, law, xlabel, ylabel) in zip(axes, panels):
        draw_isoflop(row[0], optima, xlabel, mu_of)
        draw_powerlaw(row[1], law, optima, ylabel)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_isoflop_summary(panels, title: str, stem: Path, mu_of: dict[str, float] | None = None) -> Path:
    return save_figure(isoflop_summary_figure(panels, title, mu_of), stem)


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
        plain_ticks(ax.yaxis, minor=False)
        ax.set_xlabel("test-time loops T")
        ax.grid(alpha=0.3)
    # one legend for all panels (the colours are the same in each), outside them: at T = 1 the curves
    # start high in one corner and end low in the other, so no corner of a panel is free
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside right upper", fontsize=7,
               title="trained at", title_fontsize=7, frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel(LOSS_LABEL)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("L(T) = L∞ + Z·exp(−zT)  (dotted: z not identified)", fontsize=9)
    return fig


def plot_testtime(df: pd.DataFrame, fits: dict[str, SaturationFit], stem: Path) -> Path:
    return save_figure(testtime_figure(df, fits), stem)


# the x columns that already show the budget or µ_rec (FLOPs ≈ budget; unrolled size grows with µ_rec)
SHOWS = {"train_flops": "flop_budget", "flop_budget": "flop_budget",
         "n_params_unrolled": "mean_recurrence", "mean_recurrence": "mean_recurrence"}


def _values(df: pd.DataFrame, column: str) -> np.ndarray:
    return (df[column].astype(float).to_numpy() if column in df and df[column].notna().any()
            else np.full(len(df), np.nan))


def draw_runs(ax, df: pd.DataFrame, x: np.ndarray, y: np.ndarray, shown: str | None = None) -> None:
    """Every run as a point traced to its budget and µ_rec: colour is the one of the two the x-axis does
    not show (shown: "flop_budget" or "mean_recurrence"; the budget by default), marker shape the other
    unless the x-axis shows it; both in a legend outside the axes."""
    budget, mu = _values(df, "flop_budget"), _values(df, "mean_recurrence")
    colour, shape = (mu, budget) if shown == "flop_budget" else (budget, mu)
    cname, sname = ("µ_rec", "C") if shown == "flop_budget" else ("C", "µ_rec")
    label = {"C": lambda v: budget_label(v), "µ_rec": lambda v: f"µ_rec = {v:g}"}
    colors = discrete_colors(colour[np.isfinite(colour)], "plasma" if cname == "C" else "viridis") \
        if np.isfinite(colour).any() else {}
    # no shapes for what the x-axis shows already (FLOPs: the budget; unrolled size: µ_rec)
    shapes = mu_markers(shape[np.isfinite(shape)]) if np.isfinite(shape).any() and shown is None and \
        np.unique(shape[np.isfinite(shape)]).size > 1 else {}
    for i in range(len(x)):
        ax.scatter([x[i]], [y[i]], s=26, zorder=3, color=colors.get(float(colour[i]), "C0"),
                   marker=shapes.get(float(shape[i]), "o"))
    for v, col in colors.items():  # legend entries: colours (filled circles), then shapes (hollow, grey)
        ax.plot([], [], "o", color=col, ms=5, label=label[cname](v))
    for v, m in shapes.items():
        ax.plot([], [], m, color="0.3", mfc="none", ms=5, label=label[sname](v))
    if colors or shapes:
        legend_outside(ax)


def loss_vs_figure(df: pd.DataFrame, column: str, xlabel: str) -> plt.Figure:
    """Final loss against one run attribute (tokens, parameters, FLOPs), log x; every point traced to its
    budget and µ_rec (``draw_runs``)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    x = df[column].astype(float).to_numpy()
    y = df["loss"].astype(float).to_numpy()
    draw_runs(ax, df, x, y, SHOWS.get(column))
    unit = UNITS.get(column)
    log_axis(ax, "x", x if np.unique(x).size <= 4 else None)
    ax.set_xlabel(f"{xlabel} ({unit})" if unit and unit not in xlabel else xlabel)
    ax.set_ylabel(LOSS_LABEL)
    plain_ticks(ax.yaxis, minor=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_loss_vs(df: pd.DataFrame, column: str, xlabel: str, stem: Path) -> Path:
    return save_figure(loss_vs_figure(df, column, xlabel), stem)


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


def _design_runs(design, meta: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """Budget and µ_rec of each point of a law's design, looked up by run id in meta (the usable runs;
    a unified-law point's id is "<run id>@T<T>"); NaN where unknown."""
    ids = [str(i).split("@T")[0] for i in design.ids] if len(design.ids) == n else [None] * n
    cols = ["flop_budget", "mean_recurrence"]
    if meta is None:
        return pd.DataFrame(np.nan, index=range(n), columns=cols)
    m = meta.set_index(meta["run_id"].astype(str))
    return pd.DataFrame({c: [float(m.at[i, c]) if i in m.index and c in m else np.nan for i in ids]
                         for c in cols})


def law_fit_figure(design, predicted: np.ndarray, name: str, meta: pd.DataFrame | None = None) -> plt.Figure:
    """A parametric law against its data: predicted vs observed (left) and log residuals vs the
    training tokens D (right), every point shown, coloured by budget and shaped by µ_rec (meta: the
    runs, to look both up; D is the right panel's axis, so colour never repeats it)."""
    observed = np.asarray(design.loss, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    D = design.raw.get("D", np.arange(observed.size, dtype=float))
    resid = np.log(observed) - np.log(predicted)
    runs = _design_runs(design, meta, observed.size)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), layout="constrained")
    lims = [min(observed.min(), predicted.min()), max(observed.max(), predicted.max())]
    left.plot(lims, lims, color="k", lw=0.8)
    left.text(0.03, 0.97, "line: y = x", transform=left.transAxes, ha="left", va="top", fontsize=8)
    draw_runs(left, runs, predicted, observed)
    if left.get_legend() is not None:  # one legend, beside the right panel
        left.get_legend().remove()
    left.set_xlabel("predicted loss (nats/token)")
    left.set_ylabel("observed loss (nats/token)")
    left.set_title(f"{name}: predicted vs observed")
    draw_runs(right, runs, D, resid)
    right.axhline(0, color="k", lw=0.8)
    log_axis(right, "x")
    right.set_xlabel("training tokens D (tokens)")
    right.set_ylabel("ln observed − ln predicted")
    right.set_title(f"residuals (RMS {np.sqrt(np.mean(resid ** 2)):.2g})")
    for ax in (left, right):
        plain_ticks(ax.yaxis, minor=False)
        ax.grid(alpha=0.3, which="both")
    plain_ticks(left.xaxis, minor=False)
    return fig


def plot_law_fit(design, predicted: np.ndarray, name: str, stem: Path, meta: pd.DataFrame | None = None) -> Path:
    return save_figure(law_fit_figure(design, predicted, name, meta), stem)


def _si(x: float, _pos=None) -> str:
    """A tick as 206k, 1.8M, 2.4B: plain for counts of parameters and tokens on a linear axis."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _merged_handles(*axes) -> tuple[list, list]:
    """The legend entries of several panels, each label once."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen.keys())


def holdout_figure(rows: list[dict], axis_label: str, band_pct: float | None = None) -> plt.Figure:
    """Held-out budgets: predicted against observed compute-optimal loss (left) and allocation (right),
    one marker per approach, the line y = x; band_pct shades ±band_pct % around it on the loss panel
    (the paper's held-out error, for comparison)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.4))
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
        plain_ticks(ax.xaxis, minor=False)
        plain_ticks(ax.yaxis, minor=False)
        if ax is right and values.size and values.max() >= 1e4:  # parameters or tokens: 1.8B, not 1.8e+09
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(ticker.FuncFormatter(_si))
        ax.grid(alpha=0.3)
    legend_outside(right, *_merged_handles(left, right), fontsize=8)  # one legend, beside the panels
    left.set_xlabel("observed compute-optimal loss (nats/token)")
    left.set_ylabel("predicted compute-optimal loss (nats/token)")
    left.set_title("held-out budgets: compute-optimal loss", fontsize=10)
    right.set_xlabel(f"observed optimum {axis_label}")
    right.set_ylabel(f"predicted optimum {axis_label}")
    right.set_title("held-out budgets: compute-optimal allocation", fontsize=10)
    return fig


def plot_holdout(rows: list[dict], axis_label: str, stem: Path, band_pct: float | None = None) -> Path:
    return save_figure(holdout_figure(rows, axis_label, band_pct), stem)
