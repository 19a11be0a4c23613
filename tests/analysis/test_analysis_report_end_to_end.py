"""End-to-end: a real temporary sqlite MLflow store, fake runs following the
data contract, analyze() and the CLI on top."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import analysis.runs as runs
from analysis.__main__ import main
from analysis.report.sweep import analyze
from analysis_soundness import assert_sound
from analysis_synthetic import CURVATURE, flops_per_token, saturating

EXPERIMENT = "parcae"
SWEEP = "isoflop-test"
OTHER = "isoflop-other-recipe"
BUDGETS = (1e11, 4e11, 1.6e12)
MUS = (1, 2, 4, 8, 16, 32)  # >= 2 loop counts on each side of every optimum


def _log_run(client: MlflowClient, exp_id: str, *, sweep: str, mu: int, budget: float | None,
             loss: float | None, status: str = "FINISHED", diverged: bool = False,
             testtime: dict[int, float] | None = None, n_params: int = 65_000_000,
             tokens: int | None = None) -> str:
    run = client.create_run(exp_id, run_name=f"{sweep}/mu{mu}-C{budget or 0:.0e}",
                            tags={"sweep_id": sweep, "run_kind": "pretrain", "config_hash": f"h{mu}{budget}"})
    fpt = int(flops_per_token(mu))
    tokens = tokens or int((budget or 1e11) / fpt)
    params = {"model.name": "tiny", "model.kind": "parcae", "model.mean_recurrence": mu,
              "model.mean_backprop": (mu + 1) // 2,
              "train.flop_budget": "None" if budget is None else f"{budget:g}",
              "derived.tokens": tokens, "derived.flops_per_token": fpt,
              "derived.n_params": n_params, "derived.n_params_unrolled": 40_000_000 + 25_000_000 * mu,
              "derived.train_flops": tokens * fpt,
              # executed FLOPs grow with µ_rec faster than the reference count (compute conventions)
              "derived.executed_flops_per_token": int(fpt * (1 + 0.05 * mu)),
              "derived.n_params_embedding": 16_000_000}
    now = int(time.time() * 1000)
    metrics = [Metric("train/loss", 5.0 - 0.1 * s, now, s) for s in range(3)]
    if loss is not None:
        metrics.append(Metric("eval/loss", loss, now, 2))
    for T, value in (testtime or {}).items():
        metrics.append(Metric(f"eval/loss_T{T}", value, now, 2))
    tags = [RunTag("diverged", "true")] if diverged else []
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, str(v)) for k, v in params.items()], tags=tags)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(root / "artifacts"))
    rng = np.random.default_rng(0)
    # An older sweep, to check that sweeps are kept apart.
    _log_run(client, exp_id, sweep="older", mu=2, budget=1e11, loss=3.3)
    # A ladder sweep: token budgets, growing models, no test-time metrics.
    for i, (n, d) in enumerate([(1e6, 2e7), (4e6, 8e7), (16e6, 3.2e8)]):
        _log_run(client, exp_id, sweep="ladder", mu=4, budget=None, n_params=int(n),
                 tokens=int(d), loss=4.0 - 0.3 * i)
    parent = client.create_run(exp_id, tags={"sweep_id": SWEEP, "run_kind": "sweep"})
    client.set_terminated(parent.info.run_id)
    # Another recipe whose optimal loop count grows more slowly with compute (for make compare).
    for C in BUDGETS:
        star = 4.5 * (C / 1e11) ** 0.25
        for mu in MUS:
            loss = 2.9 - 0.05 * np.log(C / 1e11) + CURVATURE * np.log(mu / star) ** 2
            _log_run(client, exp_id, sweep=OTHER, mu=mu, budget=C, loss=float(loss + rng.normal(0, 1e-3)))
    for C in BUDGETS:
        star = 3.0 * (C / 1e11) ** 0.4
        for mu in MUS:
            loss = 3.0 - 0.05 * np.log(C / 1e11) + CURVATURE * np.log(mu / star) ** 2
            loss += rng.normal(0, 1e-3)
            tt = {T: float(saturating(T, loss - 0.01, 0.6, 0.7)) for T in (1, 2, 4, 8, 16)}
            _log_run(client, exp_id, sweep=SWEEP, mu=mu, budget=C, loss=float(loss), testtime=tt)
    _log_run(client, exp_id, sweep=SWEEP, mu=4, budget=1e11, loss=float("nan"), diverged=True)
    _log_run(client, exp_id, sweep=SWEEP, mu=8, budget=4e11, loss=None, status="FAILED")
    return uri


def test_load_runs_types_and_filters(store):
    df = runs.load_runs(store, EXPERIMENT, SWEEP)
    assert len(df) == len(BUDGETS) * len(MUS) + 2
    assert str(df["mean_recurrence"].dtype) == "Int64"
    assert df["flop_budget"].dtype == float and df["loss"].dtype == float
    assert df["diverged"].sum() == 1
    usable, excluded = runs.split_usable(df)
    assert len(usable) == len(BUDGETS) * len(MUS)
    assert sorted(excluded["reason"]) == ["diverged", "status FAILED"]
    long = runs.testtime_long(usable)
    assert sorted(long["T"].unique()) == [1, 2, 4, 8, 16]
    assert runs.latest_sweep_id(store, EXPERIMENT) == SWEEP


def test_token_budget_runs_have_nan_flop_budget(store):
    df = runs.load_runs(store, EXPERIMENT, "ladder")
    assert len(df) == 3 and df["flop_budget"].isna().all()
    assert df["tokens"].tolist() == [20_000_000, 80_000_000, 320_000_000]
    assert runs.testtime_long(df).empty


def test_analyze_end_to_end(store, tmp_path):
    import json
    out = tmp_path / "report"
    path = analyze(store, EXPERIMENT, SWEEP, out, n_boot=300)
    text = path.read_text()
    assert path == out / "report.md"
    # The report leads with its answer: the headline right under the title, the same as summary.json's.
    summary = json.loads((out / "summary.json").read_text())
    head = text.split("\n\n")[1:3]
    assert head[0] == "## Headline" and head[1].splitlines() == [f"- {h}" for h in summary["headline"]]
    assert summary["headline"][0].startswith("µ_rec* ∝ C^0.") and "paper: 0.40" in summary["headline"][0]
    mu = summary["isoflop"]["mean_recurrence"]
    assert mu["exponent"] == pytest.approx(0.4, abs=0.1) and mu["interval"][0] < 0.4 < mu["interval"][1]
    assert mu["budgets_used"] == list(BUDGETS) and mu["budgets_excluded"] == {}
    assert mu["paper"]["exponent"] == 0.4 and summary["isoflop"]["tokens"]["paper"]["exponent"] == 0.78
    assert summary["runs"] == {"used": len(BUDGETS) * len(MUS),
                               "excluded": {"diverged": 1, "status FAILED": 1}}
    assert {"parcae", "recurrence", "unified"} <= set(summary["laws"])
    assert "intervals" in summary["laws"]["parcae"] and "b_opt" in summary["laws"]["recurrence"]
    tt = summary["testtime"]
    assert len(tt) == len(BUDGETS) * len(MUS) and {"L_inf", "z", "identified", "T_star", "mu_rec"} <= set(tt[0])
    assert "runs: 18 used, 2 excluded (1 × diverged, 1 × status FAILED)" in summary["headline"]
    # Runs are named by run name and config hash, never by MLflow run id.
    assert f"{SWEEP}/mu4-C1e+11 (h4{1e11})" in text
    assert not any(r.info.run_id in text for r in MlflowClient(tracking_uri=store).search_runs(
        [MlflowClient(tracking_uri=store).get_experiment_by_name(EXPERIMENT).experiment_id]))
    assert "mu_rec* ∝ C^gamma" not in text and "µ_rec* ∝ C^gamma" in text and "D* ∝ C^gamma" in text
    assert "2 run(s) excluded" in text and "diverged" in text and "status FAILED" in text
    assert "## Approach 2 vs Approach 3" in text
    assert_sound(text, summary)  # no number outside its interval, no se > 1e6, no negative r²
    # three budgets: no held-out check, and the report says why
    assert summary["holdout"]["budgets"] == [] and "needs >= 4" in summary["holdout"]["reason"]
    assert summary["qc"]["min_points"] == 6
    conv = {r["quantity"]: r for r in summary["conventions"]["table"]}
    assert "## Compute conventions" in text and summary["conventions"]["default"] == {"flops": "reference",
                                                                                       "params": "unique"}
    assert conv["N* (unique)"]["reference FLOPs"].startswith("not varied")  # one model, µ_rec varied
    assert conv["N* (unrolled)"]["executed FLOPs"][0].isdigit() and conv["D*"]["reference FLOPs"][0].isdigit()
    assert "| parcae / tiny | parcae |" in text  # interior optima here, so the approaches are compared
    assert "Held out (largest budget)" in text and "Held out (largest unrolled model)" in text
    for name in ("isoflop_parcae_tiny_mean_recurrence", "powerlaw_parcae_tiny_tokens",
                 "testtime", "loss_vs_tokens", "law_parcae_residuals"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
        assert (out / "figures" / f"{name}.pdf").exists()
        assert f"figures/{name}.png" in text

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    logged = client.search_runs([exp.experiment_id], "tags.run_kind = 'analysis'")
    assert len(logged) == 1
    run = logged[0]
    assert run.data.tags["sweep_id"] == SWEEP and run.info.status == "FINISHED"
    parent = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep'")[0]
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    gamma = run.data.metrics["parcae_tiny.gamma_mean_recurrence"]
    assert gamma == pytest.approx(0.4, abs=0.1)
    assert f"{gamma:.4g}" in text
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "summary.json", "figures"} <= artifacts
    assert run.data.tags["mlflow.note.content"].startswith("## Headline\n\n- µ_rec* ∝ C^")
    # The analysis run shares the sweep tag but must not be read back as a training run.
    assert len(runs.load_runs(store, EXPERIMENT, SWEEP)) == len(BUDGETS) * len(MUS) + 2
    assert runs.latest_sweep_id(store, EXPERIMENT) == SWEEP
    # Every analysis run gets its own name (a sweep is analysed again after each extension).
    again = client.get_run(runs.store.log_analysis_run(store, EXPERIMENT, SWEEP, out, {}, {}, "again"))
    assert run.info.run_name.startswith(f"analysis-{SWEEP}-") and again.info.run_name != run.info.run_name


# Everything that fits: a redraw must call none of them (analysis.compute is the one place they run).
FITTERS = ("fit_law", "bootstrap_law", "fit_sweep_laws", "fit_testtime", "fit_testtime_runs", "compare_forms",
           "approach2", "isoflop_optima", "budget_optimum", "fit_parabola", "akima_optimum", "choose_estimator",
           "powerlaw_from_optima", "fit_powerlaw", "holdout_predictions", "sweep_holdout", "convention_table",
           "convention_entry", "sweep_groups", "isoflop_group", "seed_summaries", "compute_sweep",
           "compute_table", "load_runs", "metric_histories", "adaptive_points", "least_squares", "minimize",
           "curve_fit", "nnls")


def _forbid_fitting(monkeypatch) -> None:
    import sys

    def refuse(*args, **kwargs):
        raise AssertionError("a redraw called a fitter")

    for name, module in list(sys.modules.items()):
        if name == "analysis" or name.startswith("analysis."):
            for fitter in FITTERS:
                if hasattr(module, fitter):
                    monkeypatch.setattr(module, fitter, refuse)


def test_cli_prints_report_path_last_and_redraw_refits_nothing(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    rc = main(["--tracking-uri", store, "--experiment", EXPERIMENT, "--out", str(out),
               "--no-mlflow-log", "--n-boot", "100"])
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "report.md")
    report, summary = (out / "report.md").read_text(), (out / "summary.json").read_text()
    points = (out / "points.csv").read_text()
    for png in (out / "figures").glob("*.png"):
        png.unlink()
    _forbid_fitting(monkeypatch)
    # redrawn from results.pkl alone: the same report, summary and points, every figure drawn again
    assert main(["--redraw", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "report.md")
    assert (out / "report.md").read_text() == report and (out / "summary.json").read_text() == summary
    assert (out / "points.csv").read_text() == points
    assert {p.stem for p in (out / "figures").glob("*.png")} == {p.stem for p in (out / "figures").glob("*.pdf")}
    # a folder without results: one line, exit 2
    capsys.readouterr()
    assert main(["--redraw", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.pkl" in err


def test_cli_fails_cleanly_without_finished_runs(store, tmp_path, capsys):
    rc = main(["--tracking-uri", store, "--sweep-id", "no-such-sweep", "--out", str(tmp_path)])
    assert rc != 0
    assert "no finished runs" in capsys.readouterr().err


def test_ladder_sweep_skips_what_it_cannot_support(store, tmp_path):
    path = analyze(store, EXPERIMENT, "ladder", tmp_path, log_to_mlflow=False)
    text = path.read_text()
    assert "IsoFLOP analysis skipped: µ_rec*: no runs with a FLOP budget" in text
    assert "isoFLOP exponents: not identified" in text.split("## About")[0]
    assert "Test-time looping\n\nSkipped" in text
    assert "ladder-style sweep" in text
    for col in ("tokens", "n_params"):
        assert (tmp_path / "figures" / f"loss_vs_{col}.png").exists()


def test_reuse_returns_an_up_to_date_report_and_refits_when_settings_change(store, tmp_path):
    """A sweep re-run that trained nothing gets its report back in seconds, without refitting."""
    from analysis.report.sweep import FINGERPRINT

    first = analyze(store, EXPERIMENT, SWEEP, tmp_path, log_to_mlflow=False, n_boot=50, reuse=True)
    stamp = (tmp_path / FINGERPRINT).read_text()
    first.write_text(first.read_text() + "\nmarker\n")
    again = analyze(store, EXPERIMENT, SWEEP, tmp_path, log_to_mlflow=False, n_boot=50, reuse=True)
    assert again.read_text().endswith("marker\n")  # reused, not rewritten
    changed = analyze(store, EXPERIMENT, SWEEP, tmp_path, log_to_mlflow=False, n_boot=60, reuse=True)
    assert "marker" not in changed.read_text() and (tmp_path / FINGERPRINT).read_text() != stamp


def test_compare_two_sweeps(store, tmp_path):
    from analysis.compare import compare, main as compare_main
    path = compare(store, EXPERIMENT, [SWEEP, OTHER], tmp_path / "cmp", n_boot=50)
    text = path.read_text()
    assert (tmp_path / "cmp" / "figures" / "compare.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "figures" / "compare.pdf").exists()
    rows = [line for line in text.splitlines() if "mu_rec* ∝ C^gamma" in line]
    assert len(rows) == 2 and any(SWEEP in r for r in rows) and any(OTHER in r for r in rows)
    from analysis.compare import exponent_table, load_sweeps
    t = exponent_table(load_sweeps(store, EXPERIMENT, [SWEEP, OTHER]), 0, 0).set_index(["sweep", "quantity"])
    g = t["gamma"]
    assert g[(SWEEP, "mu_rec* ∝ C^gamma")] == pytest.approx(0.4, abs=0.1)
    assert g[(OTHER, "mu_rec* ∝ C^gamma")] == pytest.approx(0.25, abs=0.1)
    # One sweep, or a sweep with no runs, is refused with exit 2 and nothing written.
    assert compare_main(["--tracking-uri", store, "--sweeps", SWEEP, "--out", str(tmp_path / "x")]) == 2
    assert compare_main(["--tracking-uri", store, "--sweeps", f"{SWEEP},nope",
                         "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y" / "compare.md").exists()


def test_seed_replicate_and_branch_tags_are_read(store):
    """sweep.seeds=K and branching: train.seed, replicate_of, branch.trunk and branch.from_tokens reach the
    runs frame; a branch is listed with its trunk's run."""
    from tracking_contract import BRANCH_FROM_TOKENS_TAG, BRANCH_TRUNK_TAG, REPLICATE_TAG

    from analysis.isoflop.seeds import branch_table
    from analysis.runs.labels import with_labels

    client = MlflowClient(tracking_uri=store)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    specs = [("trunk", "t9", 0, {}), ("s0", "p1s0", 0, {REPLICATE_TAG: "p1"}),
             ("s1", "p1s1", 1, {REPLICATE_TAG: "p1", BRANCH_TRUNK_TAG: "t9", BRANCH_FROM_TOKENS_TAG: "6000000"})]
    for name, h, seed, tags in specs:
        run = client.create_run(exp_id, run_name=name, tags={"sweep_id": "seeded", "run_kind": "pretrain",
                                                             "config_hash": h, **tags})
        client.log_batch(run.info.run_id, metrics=[Metric("eval/loss", 3.0, 0, 1)],
                         params=[Param("train.seed", str(seed)), Param("derived.tokens", "8000000")])
        client.set_terminated(run.info.run_id)
    df = runs.load_runs(store, EXPERIMENT, "seeded").set_index("run_name")
    assert df.loc["s1", "seed"] == 1 and str(df["seed"].dtype) == "Int64"
    assert df.loc["s0", "replicate_of"] == "p1" and pd.isna(df.loc["trunk", "replicate_of"])
    assert df.loc["s1", "branch_trunk"] == "t9" and df.loc["s1", "branch_from_tokens"] == 6e6
    t = branch_table(with_labels(df.reset_index()))
    assert t["run"].tolist() == ["s1 (p1s1)"] and t["trunk directory"].tolist() == ["runs/trunk-t9/"]
