"""Held-out budgets (--holdout), the QC settings (--qc), the measured choice of the headline estimator,
and a headline that only states what is identified."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.__main__ import main
from analysis.estimation import not_identified
from analysis.holdout import holdout_predictions
from analysis.isoflop.groups import isoflop_group
from analysis.options import Options
from analysis.report.summary import _law_lines, _testtime_line
from analysis.runs.table import load_table
from analysis.synth import CHINCHILLA_TRUE, chinchilla_loss, isoflop_grid
from analysis_soundness import soundness_problems
from analysis_synthetic import chinchilla_table

COLUMNS = {"flops": "C", "params": None, "tokens": None, "loss": "loss", "loops": None}
TRUE_A = CHINCHILLA_TRUE["beta"] / (CHINCHILLA_TRUE["alpha"] + CHINCHILLA_TRUE["beta"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_budget_loss_error_is_under_two_percent(tmp_path, seed):
    """Chinchilla surface, 5 budgets × 9 sizes, 0.3 % noise: fitted on 4 budgets, the largest predicted."""
    table = load_table(chinchilla_table(tmp_path / "t.csv", seed=seed), COLUMNS, 0.1)
    h = holdout_predictions(table.frame, ("params", "tokens"), Options(n_boot=0))
    assert h.reason is None and len(h.budgets) == 1 and h.budgets[0] == pytest.approx(1e21, rel=0.02)
    assert {r["approach"] for r in h.rows} == {"Approach 2", "Approach 3 (chinchilla)"}
    assert all(abs(r["error_pct"]) < 2 for r in h.rows) and h.mean_abs_error_pct < 2
    for r in h.rows:  # the allocation too: within 35 % of the observed optimum size
        assert r["predicted_N"] == pytest.approx(r["observed_N"], rel=0.35)
        assert r["observed_loss"] == pytest.approx(chinchilla_loss(r["observed_N"], 1e21 / 6 / r["observed_N"],
                                                                   CHINCHILLA_TRUE), rel=0.01)


def test_holdout_needs_four_budgets_and_enough_training_budgets(tmp_path):
    table = load_table(chinchilla_table(tmp_path / "t.csv", budgets=np.geomspace(1e18, 1e20, 3)), COLUMNS, 0.1)
    assert "needs >= 4" in holdout_predictions(table.frame, ("params",), Options()).reason
    table = load_table(chinchilla_table(tmp_path / "u.csv", budgets=np.geomspace(1e18, 1e21, 4)), COLUMNS, 0.1)
    assert "training budget" in holdout_predictions(table.frame, ("params",), Options(holdout=2)).reason
    assert holdout_predictions(table.frame, ("params",), Options(holdout=0)).reason.startswith("disabled")


def test_unknown_qc_key_is_one_line_and_exit_2(tmp_path, capsys):
    csv = chinchilla_table(tmp_path / "t.csv")
    assert main(["--csv", str(csv), "--out", str(tmp_path / "out"), "--qc", "outlier_sd=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outlier_sd" in err and "outlier_z" in err
    assert main(["--csv", str(csv), "--out", str(tmp_path / "out"), "--qc", "min_points=two"]) == 2
    assert "min_points" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["--csv", str(csv), "--out", str(tmp_path / "out"), "--qc", "outlier_z=-5"]) == 2
    assert "outlier_z" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["--csv", str(csv), "--out", str(tmp_path / "out"), "--n-boot", "-5"]) == 2
    assert "--n-boot" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _coarse_frame(seed, n_budgets=4, n_per=6, noise=0.003, span=8):
    import pandas as pd

    budgets = np.geomspace(1e18, 1e21, n_budgets)
    N, D = isoflop_grid(budgets=budgets, n_per=n_per, span=span)
    L = chinchilla_loss(N, D, CHINCHILLA_TRUE) * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))
    n = N.size
    return pd.DataFrame({"flop_budget": np.repeat(budgets, n_per), "n_params": N, "tokens": D, "loss": L,
                         "run_id": [f"r{i}" for i in range(n)], "mean_recurrence": np.nan, "model_name": "t",
                         "model_kind": "table", "train_flops": 6 * N * D})


def test_coarse_grid_picks_the_parabola_and_it_is_the_more_accurate():
    """4 budgets × 9 sizes (×/÷ 8), 0.3 % noise: the simulation of this grid under truths not fitted to
    it picks the parabola, and on the real noisy tables the parabola is indeed the closer of the two."""
    errors = {"akima": [], "parabola": []}
    for seed in range(4):
        g = isoflop_group("t", _coarse_frame(seed, n_per=9), Options(n_boot=0), ("params",),
                          np.random.default_rng(seed))
        (r,) = g.results
        assert r.choice.estimator == "parabola", r.choice.reason()
        assert r.choice.rmse["akima"] > r.choice.rmse["parabola"]
        errors[r.law.estimator].append(abs(r.law.gamma - TRUE_A))
        errors[r.alternative.estimator].append(abs(r.alternative.gamma - TRUE_A))
    assert np.mean(errors["parabola"]) < np.mean(errors["akima"])


def test_not_identified_rule():
    assert not_identified(0.45, 0.43, 0.47) is None
    assert "includes 0" in not_identified(0.217, -0.182, 0.576)
    assert "spans 0.92" in not_identified(0.459, 0.082, 1.0)
    assert "outside" in not_identified(0.5, 0.1, 0.3)


def test_approach3_exponents_and_testtime_advice_say_not_identified():
    lines = _law_lines({"parcae": {"a_opt": 0.459, "b_opt": 0.541,
                                   "intervals": {"a_opt": [0.082, 1.0], "b_opt": [0.52, 0.56]}}})
    assert "N* exponent not identified" in lines[0] and "0.459" not in lines[0]
    assert "D* exponent 0.541 [0.520, 0.560]" in lines[0]
    flat = [{"identified": False, "T_star": None, "mu_rec": 1.0, "flags": ["no decay: ..."]}] * 3
    line = _testtime_line(flat)
    assert "does not fall with T" in line and "denser" not in line


def test_the_scan_finds_unsound_numbers():
    report = ("- e to -0.2442, 95 % interval [-2.138e+15, -40]\n\n| run | se_z | r2 |\n|---|---|---|\n"
              "| a | 1.489e+16 | -0.5 |\n")
    problems = soundness_problems(report, {"headline": ["N* ∝ C^0.217, 95 % interval [-0.182, 0.576]"],
                                           "isoflop": {"params": {"exponent": 0.217,
                                                                  "interval": [-0.182, 0.576]}}})
    assert len(problems) == 4, problems


def test_compute_convention_table_for_a_looped_sweep():
    """µ_rec varied at fixed model size: unique parameters do not vary within a budget, unrolled ones do;
    executed FLOPs re-value the budgets (here 10 % more per loop), a count not logged says so."""
    from analysis.isoflop.conventions import convention_table
    from analysis_synthetic import isoflop_frame

    df = isoflop_frame(noise=1e-4, seed=1).assign(n_params=65_000_000, n_params_embedding=np.nan)
    df["n_params_unrolled"] = 40_000_000 + 25_000_000 * df["mean_recurrence"]
    df["executed_flops_per_token"] = df["flops_per_token"] * (1 + 0.1 * df["mean_recurrence"])  # grows with µ_rec
    t = convention_table(df, "tiny", Options(n_boot=200)).set_index("quantity")
    assert t.loc["N* (unique)", "reference FLOPs"].startswith("not varied")
    assert t.loc["N* (without embedding)", "reference FLOPs"] == "not logged"
    ref, exe = (float(t.loc["N* (unrolled)", f"{c} FLOPs"].split()[0]) for c in ("reference", "executed"))
    assert 0.1 < ref < 0.6 and exe != ref  # the count moves the exponent, and the table shows it
    no_exec = convention_table(df.drop(columns="executed_flops_per_token"), "tiny", Options(n_boot=0))
    assert no_exec.set_index("quantity").loc["N* (unrolled)", "executed FLOPs"] == "not logged"
