"""`--help` of the entry points that take Hydra-style key=value overrides without being a Hydra app
(experiments.evaluate, experiments.tune, experiments.sweep): usage, what the command does, and its keys
with their defaults. Hydra's own apps (pretrain, finetune, prepare_data) answer --help themselves.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

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
