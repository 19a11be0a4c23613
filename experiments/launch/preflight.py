"""Checks an entry point runs on its command line before Hydra starts, so that a bad input ends in one
line and exit 2 with nothing left behind: Hydra writes outputs/<date>/.hydra/*.yaml (the composed
config and the overrides, a password in a URI included) before the job function runs, and reports an
unknown key or a value of the wrong type as a multi-line message with exit 1.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import open_dict

from experiments.config.errors import ConfigError, one_line_errors
from experiments.config.plan import check_uri_has_no_password, plan
from experiments.launch.sweep import grid_overrides

CONF = Path(__file__).resolve().parents[2] / "conf"
_HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--package", "-p",
                "--run", "-r", "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun")


def preflight(config_name: str, argv: list[str], check_plan: bool = True) -> None:
    """Compose every command-line grid point (unknown keys, wrong types) and, for a single run, validate
    it (`plan`); a password in any override value fails at once. Exits 2 with one line on the first
    error. Anything but overrides and -m/--multirun (Hydra's own flags) is left to Hydra."""
    if any(a.split("=", 1)[0] in _HYDRA_FLAGS for a in argv):
        return
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    with one_line_errors():
        parser = OverridesParser.create()
        for o in overrides:
            key, _, value = o.partition("=")
            check_uri_has_no_password(key.lstrip("+~"), value)
            try:
                parser.parse_override(o)
            except HydraException as err:  # Hydra's message names no key
                raise ConfigError(key.lstrip("+~"), value, f"cannot be parsed ({' '.join(str(err).split()[:8])} ...)",
                                  "see Hydra's override grammar; quote lists and dicts for the shell, e.g. "
                                  "'train.test_loops=[1,2]'") from None
        if GlobalHydra.instance().is_initialized():
            return  # inside another Hydra app (tests): compose would clash with it
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            points = grid_overrides(None, overrides)
            for point in points:
                cfg = compose(config_name=config_name, overrides=point, return_hydra_config=True)
                # hydra.mode composes to a RunMode enum (a sweep file's `mode: MULTIRUN` included)
                single = not multirun and cfg.hydra.mode != RunMode.MULTIRUN and len(points) == 1
                if check_plan and single:
                    with open_dict(cfg):
                        del cfg["hydra"]  # the job's view of its config
                    plan(cfg)
