"""python -m analysis --csv: binning, one-line errors with nothing written, the report and summary.json
from a synthetic table with known truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.synth import CHINCHILLA_TRUE
from analysis_synthetic import chinchilla_table
from analysis_soundness import assert_sound
from analysis.runs.table import TableError, bin_budgets, load_table

TRUE_A = CHINCHILLA_TRUE["beta"] / (CHINCHILLA_TRUE["alpha"] + CHINCHILLA_TRUE["beta"])


def test_budgets_are_binned_to_nominal_values_within_the_tolerance():
    C = np.array([1e18 * 1.02, 0.99e18, 1.0e18, 4.1e18, 3.95e18, 1.6e19])
    nominal, bins = bin_budgets(C, 0.1)
    assert len(bins) == 3 and list(bins["runs"]) == [3, 2, 1]
    assert np.allclose(nominal, [1.0e18, 1.0e18, 1.0e18, 4.02e18, 4.02e18, 1.6e19], rtol=1e-2)
    assert bins["max_rel_dev"].max() < 0.03
    assert len(bin_budgets(C, 0.0)[1]) == 6  # no tolerance: exact values only


def test_csv_end_to_end_recovers_the_allocation_and_writes_summary(tmp_path, capsys):
    csv = chinchilla_table(tmp_path / "runs.csv")
    out = tmp_path / "out"
    assert main(["--csv", str(csv), "--out", str(out), "--n-boot", "100"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    summary = json.loads((out / "summary.json").read_text())
    text = (out / "report.md").read_text()
    assert text.startswith("# Table analysis: `runs.csv`\n\n## Headline\n\n- N* ∝ C^")
    n = summary["isoflop"]["params"]
    assert n["exponent"] == pytest.approx(TRUE_A, abs=0.06) and n["interval"][0] < n["interval"][1]
    assert len(n["budgets_used"]) + len(n["budgets_excluded"]) == 5 and "paper" not in n
    assert set(summary["isoflop"]) == {"params", "tokens"}
    law = summary["laws"]["chinchilla"]
    assert law["a_opt"] == pytest.approx(TRUE_A, abs=0.02) and len(law["intervals"]["alpha"]) == 2
    assert summary["runs"] == {"used": 45, "excluded": {}}
    assert summary["source"]["budget_tolerance"] == 0.1 and len(summary["source"]["budgets"]) == 5
    assert "binned into 5 FLOP budget(s)" in text and "row 1" in text
    # points.csv: one row per input row, with its budget, whether it was used and why not
    points = pd.read_csv(out / "points.csv", keep_default_na=False)
    assert list(points.columns) == ["run", "group", "budget", "N", "D", "mu_rec", "loss", "used", "stage", "reason",
                                    "detail", "notes"] and len(points) == 45
    assert points["run"].tolist() == [f"row {i + 1}" for i in range(45)]
    excluded = {float(c) for c in n["budgets_excluded"]} | {float(c) for c in summary["isoflop"]["tokens"]["budgets_excluded"]}
    used = points["used"].astype(str) == "True"
    assert_sound(text, summary)
    held = summary["holdout"]  # the largest budget held out and predicted by every approach
    assert len(held["budgets"]) == 1 and held["mean_abs_error_pct"] < 2
    assert {r["approach"] for r in held["rows"]} == {"Approach 2", "Approach 3 (chinchilla)"}
    assert "## Held-out budgets" in text and (out / "figures" / "holdout.png").exists()
    assert summary["qc"]["outlier_z"] == 6.0 and n["estimator_choice"]["estimator"] in ("akima", "parabola")
    assert used.sum() > 0 and all(points.loc[~used, "reason"].str.len() > 0)  # every exclusion says why
    assert all(points.loc[~used, "detail"].str.len() > 0)


def test_too_few_clean_budgets_gives_no_power_law_and_says_why(tmp_path):
    csv = chinchilla_table(tmp_path / "two.csv", budgets=[1e18, 1e19])
    out = tmp_path / "out"
    assert main(["--csv", str(csv), "--out", str(out), "--n-boot", "0"]) == 0
    entry = json.loads((out / "summary.json").read_text())["isoflop"]["params"]
    assert entry["exponent"] is None and "need 3 (--min-budgets)" in entry["reason"]
    assert "N* ∝ C^γ: not identified" in (out / "report.md").read_text()


def test_column_flags_and_derived_tokens(tmp_path):
    csv = tmp_path / "named.csv"
    df = pd.read_csv(chinchilla_table(tmp_path / "t.csv"))
    df.rename(columns={"C": "Training FLOP", "N": "Model Size"}).drop(columns="D").to_csv(csv, index=False)
    t = load_table(str(csv), {"flops": "Training FLOP", "params": "Model Size"})
    assert t.columns["tokens"] is None and "D = C / (6·N)" in t.notes[0]
    assert np.allclose(t.frame["tokens"], df["C"] / (6 * df["N"]))


BAD = {
    "missing column": ("C,N,D\n1e18,1e8,1e9\n", "no column 'loss' for loss"),
    "misnamed flag": ("C,N,D,loss\n1e18,1e8,1e9,3\n", "no column 'params_x' for params"),
    "text": ("C,N,D,loss\n1e18,1e8,1e9,3\n1e18,abc,1e9,3\n", "row 2 (line 3), column 'N' (--params): 'abc'"),
    "NaN": ("C,N,D,loss\n1e18,1e8,1e9,nan\n", "row 1 (line 2), column 'loss' (--loss) is empty/NaN"),
    "empty cell": ("C,N,D,loss\n1e18,,1e9,3\n", "column 'N' (--params) is empty/NaN"),
    "non-positive": ("C,N,D,loss\n1e18,1e8,-1e9,3\n", "column 'D' (--tokens): -1e9 must be > 0"),
    "zero loss": ("C,N,D,loss\n1e18,1e8,1e9,0\n", "must be > 0"),
    "empty file": ("", "is empty"),
    "header only": ("C,N,D,loss\n", "has a header but no rows"),
    "no size column": ("C,loss\n1e18,3\n", "no column for parameters"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_tables_are_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    text, expected = BAD[case]
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    out = tmp_path / "out"
    extra = ["--params", "params_x"] if case == "misnamed flag" else []
    assert main(["--csv", str(csv), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_missing_file_and_bad_tolerance(tmp_path):
    with pytest.raises(TableError, match="no such file"):
        load_table(str(tmp_path / "nope.csv"))
    csv = chinchilla_table(tmp_path / "t.csv")
    with pytest.raises(TableError, match="--budget-tolerance"):
        load_table(str(csv), tolerance=1.5)


def test_a_sweep_over_model_sizes_gets_an_N_star_power_law(tmp_path):
    """MLflow path: one model per size, sizes varied at fixed budgets and one µ_rec."""
    from analysis.isoflop.groups import sweep_groups
    from analysis.options import Options
    df = load_table(str(chinchilla_table(tmp_path / "t.csv"))).frame
    df = df.assign(mean_recurrence=1, model_name=[f"m{i % 9}" for i in range(len(df))])
    (r,) = [r for g in sweep_groups(df, Options(n_boot=50)) for r in g.results]
    assert (r.group, r.axis, r.paper) == ("all models", "params", None)
    assert r.law.gamma == pytest.approx(TRUE_A, abs=0.06)


def test_predict_at_a_target_budget_covers_the_truth(tmp_path):
    """--predict 1e23 on a synthetic Chinchilla table: the true N*, D* and L* lie inside the intervals of
    summary.json["predictions"] (Approach 3, the law's own form), and Approach 2 says what it predicts."""
    from analysis.synth import CHINCHILLA_TRUE as P

    csv = chinchilla_table(tmp_path / "t.csv", budgets=np.geomspace(1e18, 1e21, 6), n_per=9, seed=3)
    out = tmp_path / "out"
    assert main(["--csv", str(csv), "--out", str(out), "--n-boot", "200", "--predict", "1e23", "--holdout", "0"]) == 0
    rows = json.loads((out / "summary.json").read_text())["predictions"]
    assert {r["approach"] for r in rows} == {"Approach 2", "Approach 3"}
    a, b = P["alpha"], P["beta"]
    n_true = (a * P["A"] / (b * P["B"])) ** (1 / (a + b)) * (1e23 / 6) ** (b / (a + b))
    d_true = 1e23 / (6 * n_true)
    l_true = P["E"] + P["A"] * n_true**-a + P["B"] * d_true**-b
    a3 = next(r for r in rows if r["approach"] == "Approach 3")
    for key, truth in (("params", n_true), ("tokens", d_true), ("loss", l_true)):
        lo, hi = a3[key]["interval"]
        assert lo <= truth <= hi, (key, truth, a3[key])
    a2 = next(r for r in rows if r["approach"] == "Approach 2")
    lo, hi = a2["params"]["interval"]
    assert lo < a2["params"]["value"] < hi and a2["far"] is True   # 100× beyond the largest budget
    assert any(line.startswith("prediction at C = 1e+23") for line in
               json.loads((out / "summary.json").read_text())["headline"])
    assert main(["--csv", str(csv), "--out", str(tmp_path / "bad"), "--predict", "1e23,x"]) == 2
    assert not (tmp_path / "bad").exists()
