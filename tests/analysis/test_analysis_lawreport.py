"""The "Parametric law" report section on synthetic runs frames."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.laws.results import fit_sweep_laws, holdout_largest_budget, law_supported
from analysis.report.law_section import law_section
from analysis.report.metrics import metrics as report_metrics
from analysis.results import Results


def _frame(noise=0.0, seed=0, mus=(1, 2, 4, 8)):
    rng = np.random.default_rng(seed)
    rows = []
    core, once = 25e6, 40e6
    for C in (1e18, 4e18, 1.6e19, 6.4e19):
        for mu in mus:
            for width in (1.0, 2.0):
                n_params = width * (once + core)
                unrolled = width * (once + mu * core)
                D = C / (6 * unrolled)
                loss = 1.9 + 500 * unrolled ** -0.34 + 2000 * D ** -0.36
                loss *= np.exp(rng.normal(0, noise))
                tt = {f"loss_T{T}": loss + 0.5 * np.exp(-1.0 * T / mu) for T in (1, 2, 4, 8, 16)}
                rows.append({"run_id": f"r{len(rows)}", "model_name": f"w{width}",
                             "mean_recurrence": mu, "flop_budget": C, "n_params": n_params,
                             "n_params_unrolled": unrolled, "tokens": D, "loss": loss, **tt})
    df = pd.DataFrame(rows)
    df["mean_recurrence"] = df["mean_recurrence"].astype("Int64")
    return df


def test_law_section_fits_and_reports():
    df = _frame(noise=0.002)
    laws = fit_sweep_laws(df, n_boot=40, seed=0)
    text = law_section(df, laws, law_supported(df), n_boot=40)
    metrics = report_metrics(Results("table", "", {}, None, "", {}, df, df, df.iloc[0:0], laws=laws))
    assert "## Parametric law" in text and "### `parcae`" in text
    assert "### `recurrence`" in text and "### `unified`" in text
    assert "n_params_unrolled" in text and "95 % bootstrap" in text
    assert abs(metrics["law.parcae.alpha"] - 0.34) < 0.05
    assert "law.parcae.holdout_mean_are" in metrics
    assert metrics["law.parcae.holdout_mean_are"] < 0.02


def test_law_section_skips_small_sweeps():
    df = _frame().iloc[:4]
    ok, why = law_supported(df)
    assert not ok and "needs >= 6 runs" in why
    text = law_section(df, [], law_supported(df), n_boot=10)
    assert text.startswith("## Parametric law\n\nSkipped")


def test_law_needs_three_values_of_each_input():
    # one model, two loop counts: two unrolled sizes, so A / N^alpha has no third point to pin alpha
    df = _frame(mus=(1, 2))
    df = df[df["model_name"] == "w1.0"]
    ok, why = law_supported(df)
    assert not ok and "2 N/mu_rec values" in why and ">= 3 distinct N" in why
    ok, _ = law_supported(_frame(mus=(1, 2, 4)).query("model_name == 'w1.0'"))
    assert ok


def test_holdout_exact_on_noiseless_surface():
    h = holdout_largest_budget("parcae", _frame())
    assert h["n_test"] == 8 and h["max_are"] < 1e-6


def test_testtime_form_comparison_prefers_exp_on_exp_curves():
    from analysis.testtime.forms import compare_forms
    df = _frame()
    df = df[df["mean_recurrence"] >= 4].iloc[:6]
    t = compare_forms(df).set_index("form")
    ind = t["in-distribution (×1e-7)"]
    assert ind["exp"] < 1e-3 and ind["exp"] < ind["power no floor"]
    ext = t["extrapolated T > mu_rec (×1e-7)"]
    assert t.loc["exp", "runs (ext)"] > 0 and ext["exp"] <= ext.min() + 1e-9



def test_holdout_largest_model_on_noiseless_surface():
    from analysis.laws.results import holdout_largest_model
    h = holdout_largest_model("parcae", _frame())
    # Two widths only, so the deepest unrolled model (width 2, mu 8) is the one left out.
    assert h["column"] == "n_params_unrolled" and h["n_test"] == 4 and h["max_are"] < 1e-6


def test_approach2_and_approach3_compared_and_disagreement_flagged():
    import dataclasses

    from analysis.isoflop import optima
    from analysis.laws.agreement import compare_approaches
    from analysis.laws.results import fit_sweep_laws
    from analysis.isoflop.powerlaw import powerlaw_from_optima
    df = _frame(mus=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48))  # >= 2 sizes on each side of most optima
    group = df[df["model_name"] == "w1.0"]
    power = powerlaw_from_optima(optima.isoflop_optima(group, "tokens"), min_budgets=2)
    results = [r for r in fit_sweep_laws(df, n_boot=0, seed=0) if r.name == "parcae"]
    t, warnings = compare_approaches({"w1.0": power}, results)
    row = t.iloc[0]
    assert abs(row["Approach 3: b_opt"] - 0.34 / 0.70) < 1e-3  # the surface's own allocation exponent
    assert row["agree"] and not warnings, t.to_dict("records")
    t, warnings = compare_approaches({"w1.0": dataclasses.replace(power, gamma=power.gamma + 0.3)}, results)
    assert not t.iloc[0]["agree"] and "disagree" in warnings[0]
