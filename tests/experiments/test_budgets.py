"""Budgets compose: the budget a user names (command line or a sweep's grid) wins over the other key's
default; naming both is one line and exit 2. `show-config` and the dry run estimate the wall time."""

import json

import pytest
from hydra import compose, initialize_config_dir

from experiments import show_config
from experiments.config.errors import ConfigError
from experiments.config.plan import budget_overrides, plan
from experiments.config.schema import register
from experiments.launch.dry_run import NOMINAL_CPU_FLOPS, cpu_throughput
from experiments.launch.sweep import grid_overrides
from helpers import REPO, pretrain

register()


@pytest.mark.parametrize("given, added", [
    (["train.flop_budget=5e12"], ["train.tokens=null"]),
    (["model=cpu-m", "train.tokens=1e6"], ["train.flop_budget=null"]),
    (["train.flop_budget=1e12,2e12", "train.tokens=null"], []),  # already nulled: nothing to add
    (["+train.flop_budget=1e12", "~train.tokens"], []),
    (["model=cpu-m"], []),  # neither named: the config's defaults decide
])
def test_a_named_budget_nulls_the_other(given, added):
    assert budget_overrides(given) == given + added


def test_naming_both_budgets_is_an_error():
    with pytest.raises(ConfigError) as err:
        budget_overrides(["train.tokens=1e6", "train.flop_budget=5e12"])
    assert err.value.key == "train.tokens" and "train.flop_budget=5e12" in str(err.value)


def test_a_sweep_grid_over_the_budget_wins_over_the_sweep_files_tokens():
    # testtime's file sets train.tokens; its grid (here: the command line's) varies train.flop_budget.
    points = grid_overrides({"model.mean_recurrence": "1,2"}, ["sweep=testtime", "train.flop_budget=1e12,2e12"])
    assert len(points) == 4
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        plans = [plan(compose(config_name="config", overrides=p)) for p in points]
    assert all(p.train_flops <= 2e12 for p in plans)


def test_show_config_takes_a_flop_budget_alone_and_estimates_the_wall_time(capsys):
    assert show_config.main(["model=cpu-m", "train.flop_budget=5e12"]) == 0
    out = capsys.readouterr().out
    assert "  tokens: null" in out and "flop_budget: 5000000000000.0" in out
    assert "est_wall_time:" in out and "# estimated wall time:" in out and "GFLOP/s executed" in out


def test_show_config_with_both_budgets_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as code:
        show_config.main(["train.tokens=1e6", "train.flop_budget=5e12"])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and len(err.splitlines()) == 1 and "train.flop_budget=5e12" in err


def test_cpu_throughput_reads_make_bench(tmp_path):
    assert cpu_throughput(tmp_path)[0] == NOMINAL_CPU_FLOPS
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "bench.json").write_text(json.dumps(
        {"device": "cpu", "preset": "bench-tiny", "threads": 2, "tokens_per_s": 1000.0,
         "executed_flops_per_token": 2e7}))
    flops, source = cpu_throughput(tmp_path)
    assert flops == 2e10 and "measured by make bench" in source


def test_sweep_dry_run_with_a_flop_budget_override(tmp_path):
    # The real entry point: preflight hands Hydra the nulled default; the dry run prices the wall time.
    r = pretrain(tmp_path, "-m", "sweep=testtime", "sweep.dry_run=true", "model.mean_recurrence=1,2",
                 "train.flop_budget=1e12")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 grid points valid" in r.stdout and "estimated wall time:" in r.stdout
