"""Every report figure renders (PNG + PDF), is not blank, reads like a paper figure (no offset axis,
no 10⁰-style or 2.05696×10⁵-style ticks, units, legends outside the axes so they cover no data or text,
colour never repeating an axis) and its legend entries match the data drawn."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from analysis.report import figures as plots
from analysis.isoflop.approach2 import LABEL, XLABEL, approach2
from analysis.isoflop.qc import Flag
from analysis.options import Options
from analysis.laws.forms import design_from_frame
from analysis.testtime.saturation import fit_testtime_runs
from analysis_synthetic import BUDGETS, MU_GRID, isoflop_frame, saturating

TEST_LOOPS = (1, 2, 4, 8, 16)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = isoflop_frame(noise=2e-3, seed=1)
    for T in TEST_LOOPS:
        df[f"loss_T{T}"] = [float(saturating(T, loss - 0.01, 0.5, 2.0 / mu)) for loss, mu
                            in zip(df["loss"], df["mean_recurrence"])]
    df["n_params"] = 65_000_000
    df["n_params_unrolled"] = 40_000_000 + 25_000_000 * df["mean_recurrence"]
    df["train_flops"] = df["flop_budget"]
    return df


@pytest.fixture(scope="module")
def axes(frame):
    return {axis: approach2(frame, "tiny", axis, Options(n_boot=200), np.random.default_rng(0))
            for axis in ("mean_recurrence", "tokens")}


def _legend_texts(fig) -> list[str]:
    out = []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            out += [t.get_text() for t in leg.get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return out


def _tick_texts(fig) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]


def _legends_outside(fig) -> None:
    """No legend overlaps the inside of any axes (data or text drawn there)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for leg in legends:
        box = leg.get_window_extent(r)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent(r)), f"legend over {ax.get_title()!r}"


def _check_saved(fig, tmp_path, name: str) -> None:
    """Readable ticks (round, at most two significant digits before ×10ⁿ), no offset text, legends
    outside the axes, then PNG + PDF written and the PNG not blank."""
    ticks = _tick_texts(fig)
    assert not any("10⁰" in t or "$" in t for t in ticks), ticks
    assert not any(len(t.split("×")[0].lstrip("−-").replace(".", "")) > 2 for t in ticks if "×" in t), ticks
    _legends_outside(fig)
    for ax in fig.axes:
        assert not ax.yaxis.get_offset_text().get_text() and not ax.xaxis.get_offset_text().get_text()
    png = plots.save_figure(fig, tmp_path / name)
    assert png.with_suffix(".pdf").stat().st_size > 1000
    img = mpimg.imread(png)[..., :3]
    ink = (img.mean(axis=2) < 0.9).mean()
    assert 0.02 < ink < 0.6, f"{name}: {ink:.3f} of the pixels inked"


def test_fmt_num_and_budget_labels():
    assert [plots.fmt_num(v) for v in (1, 2, 4, 8, 0.5)] == ["1", "2", "4", "8", "0.5"]
    assert [plots.fmt_tick(v, log=False) for v in (0.005, -0.015, 3.05, 0)] == ["0.005", "−0.015", "3.05", "0"]
    assert plots.is_round(2e5) and plots.is_round(1.6e19) and not plots.is_round(205_696)
    assert plots.fmt_num(2e12) == "2×10¹²" and plots.fmt_num(1e9) == "10⁹"
    assert plots.budget_label(4e18) == "C = 4×10¹⁸ FLOPs"


def _mu_of(frame) -> dict[str, float]:
    return dict(zip(frame["run_id"].astype(str), frame["mean_recurrence"].astype(float)))


def test_isoflop_tokens_figure_marks_every_point_by_mu_rec(frame, axes, tmp_path):
    """Loss vs tokens: colour is the budget, shape the µ_rec, both in the legend."""
    r = axes["tokens"]
    fig = plots.isoflop_figure(r.optima, XLABEL[r.axis], _mu_of(frame))
    assert _legend_texts(fig) == ([plots.budget_label(C) for C in BUDGETS] + [f"µ_rec = {m:g}" for m in MU_GRID])
    shapes = plots.mu_markers(MU_GRID)
    drawn = {}
    for coll in fig.axes[0].collections:  # one scatter per point: its shape is its µ_rec's
        if len(coll.get_offsets()) == 1:
            drawn[tuple(np.round(coll.get_offsets()[0], 6))] = coll
    assert len(set(shapes.values())) == len(MU_GRID) and len(drawn) >= len(frame) - 2
    _check_saved(fig, tmp_path, "isoflop_tokens")


def test_isoflop_and_powerlaw_figures(frame, axes, tmp_path):
    r = axes["mean_recurrence"]
    assert r.law is not None
    fig = plots.isoflop_figure(r.optima, XLABEL[r.axis], _mu_of(frame))
    # x is µ_rec: colour is the budget and no µ_rec shapes repeat the axis
    assert _legend_texts(fig) == [plots.budget_label(C) for C in BUDGETS]
    # µ_rec is discrete: its ticks are the sampled values
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"{m:g}" for m in MU_GRID]
    _check_saved(fig, tmp_path, "isoflop")
    fig = plots.powerlaw_figure(r.law, r.optima, LABEL[r.axis])
    texts = _legend_texts(fig)
    assert any(t.startswith(f"fit: {LABEL[r.axis]} ∝ C^{r.law.gamma:.3f}, 95 % [") for t in texts)
    assert "95 % band (noise draws)" in texts and any(t.startswith("extrapolation") for t in texts)
    assert ("optimum left out (flagged)" in texts) == any(not o.ok for o in r.optima)
    assert "FLOPs" in fig.axes[0].get_xlabel()
    _check_saved(fig, tmp_path, "powerlaw")


def test_fit_through_flagged_optima_is_drawn_as_such(frame, tmp_path):
    r = approach2(frame, "tiny", "mean_recurrence", Options(n_boot=50, keep_flagged=True),
                  np.random.default_rng(0))
    r.optima[0].flags.append(Flag("test", "forced"))  # one flagged budget
    fig = plots.powerlaw_figure(r.law, r.optima, LABEL[r.axis])
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("fit"))
    assert line.get_label().startswith("fit THROUGH FLAGGED optima") and line.get_linestyle() == "--"
    _check_saved(fig, tmp_path, "powerlaw_flagged")


def test_chinchilla_summary_figure(axes, tmp_path):
    panels = [(r.optima, r.law, XLABEL[r.axis], LABEL[r.axis]) for r in axes.values()]
    fig = plots.isoflop_summary_figure(panels, "tiny")
    assert len(fig.axes) == 4
    budgets = [plots.budget_label(C) for C in BUDGETS]
    assert _legend_texts(fig).count(budgets[0]) == 2
    _check_saved(fig, tmp_path, "summary")


def test_testtime_figure_discrete_colours_shared_y(frame, tmp_path):
    frame = frame[frame["flop_budget"].isin(BUDGETS[:3])]  # 3 panels are enough (and quicker to fit)
    fits = fit_testtime_runs(frame)
    fig = plots.testtime_figure(frame, fits)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert len({ax.get_ylim() for ax in visible}) == 1  # one y range across budgets
    assert _legend_texts(fig) == [f"µ_rec = {m:g}" for m in MU_GRID]  # one legend, beside the panels
    assert all(ax.get_legend() is None for ax in visible)
    assert not any(type(a).__name__ == "Colorbar" for a in fig.axes)
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["1", "2", "4", "8", "16"]
    _check_saved(fig, tmp_path, "testtime")


@pytest.mark.parametrize("column,label", [("tokens", "training tokens D"), ("train_flops", "training FLOPs"),
                                          ("n_params_unrolled", "unrolled parameters")])
def test_loss_vs_figure(frame, column, label, tmp_path):
    fig = plots.loss_vs_figure(frame, column, label)
    budgets, mus = [plots.budget_label(C) for C in BUDGETS], [f"µ_rec = {m:g}" for m in MU_GRID]
    # colour: the one of budget and µ_rec the x-axis does not show; shape: the other, unless x shows it
    assert _legend_texts(fig) == {"tokens": budgets + mus, "train_flops": mus,
                                  "n_params_unrolled": budgets}[column]
    assert plots.UNITS[column] in fig.axes[0].get_xlabel()
    _check_saved(fig, tmp_path, f"loss_vs_{column}")


def test_law_fit_figure(frame, tmp_path):
    from analysis.laws.point_fit import fit_law
    d = design_from_frame(frame, "parcae")
    fit = fit_law("parcae", d)
    fig = plots.law_fit_figure(d, fit.predict(d), "parcae", meta=frame)
    # the residuals are plotted against D: colour is the budget and shape the µ_rec, never D again
    assert _legend_texts(fig) == ([plots.budget_label(C) for C in BUDGETS] + [f"µ_rec = {m:g}" for m in MU_GRID])
    assert not any(type(a).__name__ == "Colorbar" or a.get_label() == "<colorbar>" for a in fig.axes)
    _check_saved(fig, tmp_path, "law")


def test_compare_figure_keeps_budgets_and_loops_apart(frame, tmp_path):
    from analysis.compare import comparison_figure
    other = frame.copy()
    other["loss"] += 0.02
    for T in TEST_LOOPS:
        other[f"loss_T{T}"] += 0.02
    fig = comparison_figure({"a": frame, "b": other})
    tt = fig.axes[2]
    # one line per sweep × µ_rec at the largest budget, none averaged over budgets or loop counts
    assert len([ln for ln in tt.get_lines() if len(ln.get_xdata())]) == 2 * len(MU_GRID)
    assert {t.get_text() for t in tt.get_legend().get_texts()} >= {"a", "b"}
    _check_saved(fig, tmp_path, "compare")


def test_pilot_figures_redrawn_from_the_docs_table(tmp_path, monkeypatch):
    """docs/pilot/pilot.md holds every pilot run: the figures redraw from it, all panels on one y axis
    (a 0.002 gap next to a 0.2 one) with the seed-noise band drawn."""
    import importlib.util
    from pathlib import Path

    import matplotlib.pyplot as plt

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("pilot_report", root / "scripts" / "pilot_report.py")
    pilot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pilot)
    rows, n_params = pilot.read_table(root / "docs" / "pilot" / "pilot.md")
    assert len(rows) >= 20 and abs(n_params["pilot-d32"] / 76_288 - 1) < 2e-3  # tokens / tpp (4 digits)
    figs = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: figs.append(fig))
    pilot.plot(rows, tmp_path, noise=0.007)
    pilot.plot_gap(rows, n_params, tmp_path, noise=0.007)
    panels = [ax for ax in figs[0].axes if ax.get_visible()]
    assert len(panels) == len({r["sweep"] for r in rows}) and len({ax.get_ylim() for ax in panels}) == 1
    assert all(any(p.get_label().startswith("within one seed noise") for p in ax.patches) for ax in panels)
    assert len({ax.get_ylim() for ax in figs[2].axes}) == 1  # the gap figure's two panels share y
    for fig in (figs[0], figs[2]):
        _legends_outside(fig)
