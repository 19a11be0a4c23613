"""sweep.branching and sweep.seeds before anything trains: what is refused (one line, exit 2), what the dry run
prices, and how replicates decide an adaptive extension. The branches' training under kills is
tests/faults/test_branching.py."""

from experiments.launch.adaptive import extensions
from experiments.training.branching import sweep_cost
from experiments.config.plan import cooldown_start
from experiments.training.trainer import wsd_multiplier
from helpers import SMALL, pretrain, sweep


def _one_error_line(out, key):
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and key in lines[0], out.stderr[-2000:]


def test_branching_needs_adamw_and_a_warmup_in_tokens(tmp_path):
    _one_error_line(pretrain(tmp_path, *SMALL, "sweep.branching=true", "train.warmup_tokens=0", "train.optimizer=muon"),
                    "sweep.branching")
    _one_error_line(pretrain(tmp_path, *SMALL, "sweep.branching=true"), "train.warmup_tokens")
    _one_error_line(pretrain(tmp_path, *SMALL, "train.warmup_tokens=100000000"), "train.warmup_tokens")
    assert not (tmp_path / "runs").exists()


def test_seeds_beside_a_seed_grid_is_refused_and_nothing_launches(tmp_path):
    out = pretrain(tmp_path, "-m", *SMALL, "sweep.seeds=2", "train.seed=0,5")
    _one_error_line(out, "sweep.seeds")
    assert not (tmp_path / "runs").exists()


def test_dry_run_prices_branching_and_lists_every_seed(tmp_path):
    out = sweep(tmp_path, "sweep=isoflop", "sweep.dry_run=true", "sweep.branching=true", "sweep.seeds=2")
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "mu1-C1e12-seed0" in text and "mu8-C4e12-seed1" in text
    line = next(line for line in text.splitlines() if "cooldown branches" in line)
    assert "8 trunk(s)" in line and "(79%)" in line, line  # cooldown_fraction 0.5: trunk to half the largest
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()


def test_sweep_cost_trains_each_trunk_once_to_its_furthest_stop():
    # Budgets 1, 2, 4 (steps 100, 200, 400) with 20 % cooldowns: trunk to 320, cooldowns 20 + 40 + 80.
    pts = [("a", s, cooldown_start(s, 0.2), 1.0) for s in (100, 200, 400)]
    assert sweep_cost(pts) == (320 + 20 + 40 + 80, 700, 1)
    assert sweep_cost(pts + [("b", 100, 80, 1.0)]) == (460 + 100, 800, 2)


def test_wsd_up_to_the_cooldown_does_not_depend_on_the_length_with_warmup_in_steps():
    for total in (40, 90, 400):
        start = cooldown_start(total, 0.5)
        assert [wsd_multiplier(s, total, 0.02, 0.5, warmup_steps=5) for s in range(start + 1)] == \
               [wsd_multiplier(s, 10_000, 0.02, 0.0, warmup_steps=5) for s in range(start + 1)]


def test_replicates_decide_an_extension_by_their_mean():
    # µ_rec 2 wins on one seed (1.7 < 1.8) but loses on the mean (1.95 > 1.85): no extension up.
    pts = [(1e12, 1, "finished", 1.8), (1e12, 1, "finished", 1.9),
           (1e12, 2, "finished", 1.7), (1e12, 2, "finished", 2.2)]
    assert extensions(pts, [1, 2, 4]) == []
    pts[3] = (1e12, 2, "finished", 1.9)  # now µ_rec 2's mean 1.8 wins at the upper edge
    assert [e.mean_recurrence for e in extensions(pts, [1, 2, 4])] == [4]
