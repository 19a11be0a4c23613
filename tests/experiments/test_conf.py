"""The Hydra config tree and the presets stay in step, and every shipped sweep validates."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.config.plan import plan
from experiments.config.schema import register
from experiments.launch.sweep import grid_overrides
from parcae import PRESETS

CONF = Path(__file__).resolve().parents[2] / "conf"
register()


def test_every_preset_has_a_model_file_and_back():
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(PRESETS)


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")))
def test_every_grid_point_of_shipped_sweeps_is_valid(sweep):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
        grid = grid_overrides(cfg.hydra.sweeper.params, [f"sweep={sweep}"])
        assert len(grid) >= 2  # a sweep compares at least two points (the pilot's controls are pairs)
        for overrides in grid:
            plan(compose(config_name="config", overrides=overrides))
