"""`--help` of the entry points that take Hydra-style key=value overrides: usage, what the command does,
and its keys with their defaults. The Hydra apps (pretrain, finetune, prepare_data) answer through
`app_help` before Hydra starts: Hydra's own help prints every model field as null (a model is a preset
resolved in Python, experiments.config.plan) and lists every group under conf/, the internal ones
(`schema`) and other apps' (`finetune/sweep`) included.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"

HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def print_help(usage: str, description: str, keys: Any = None, title: str = "keys (key=value; defaults shown)",
               notes: str = "") -> None:
    """Usage line, description, then `keys` (a dataclass schema or config) as YAML, then notes; on stdout."""
    print(f"usage: {usage}\n\n{description.strip()}")
    if keys is not None:
        print(f"\n{title}:\n" + textwrap.indent(OmegaConf.to_yaml(OmegaConf.structured(keys)), "  "), end="")
    if notes:
        print(f"\n{notes.strip()}")


def app_groups(config_name: str) -> dict[str, list[str]]:
    """The config groups a user of app `config_name` chooses from (its defaults list, conf/<name>.yaml),
    each with its options: `- group: option` entries with a folder under conf/, not Hydra's own."""
    defaults = yaml.safe_load((CONF / f"{config_name}.yaml").read_text()).get("defaults", [])
    groups = {}
    for entry in defaults:
        if isinstance(entry, dict):
            group = next(iter(entry))
            if not group.startswith("override") and (CONF / group).is_dir():
                groups[group] = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    return groups


def app_help(config_name: str, usage: str, description: str, overrides: Sequence[str] = ()) -> None:
    """--help of a Hydra app: usage, description, the groups to choose from, then the config as it would
    run with `overrides` (the model preset resolved), on stdout."""
    from hydra import compose, initialize_config_dir

    from experiments.config.errors import one_line_errors
    from experiments.config.plan import budget_overrides, resolve_model
    from experiments.config.schema import register

    register()
    given = [o for o in overrides if o not in HELP_FLAGS and "=" in o]
    with one_line_errors(), initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        given = budget_overrides(given)  # as the run would compose them
        cfg = OmegaConf.to_container(compose(config_name=config_name, overrides=given), resolve=True)
        resolved = isinstance(cfg.get("model"), dict)
        if resolved:
            cfg["model"] = vars(resolve_model(cfg["model"]))  # the preset's values, not Hydra's nulls
    groups = "\n".join(f"  {g}: {', '.join(options)}" for g, options in app_groups(config_name).items())
    print(f"usage: {usage}\n\n{description.strip()}\n\n"
          f"groups (group=option; conf/<group>/<option>.yaml):\n{groups}\n\n"
          f"keys (key=value; the defaults{' with ' + ' '.join(given) if given else ''}"
          f"{', model preset resolved' if resolved else ''}):\n"
          + textwrap.indent(OmegaConf.to_yaml(OmegaConf.create(cfg)), "  ")
          + "\nflags: -m/--multirun runs a grid (comma-separated values, or sweep=<name>); --cfg job prints "
            "Hydra's composed config; --hydra-help Hydra's own options. A budget is train.tokens or "
            "train.flop_budget: naming one nulls the other.")
