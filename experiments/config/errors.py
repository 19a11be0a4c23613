"""The errors a user can fix, and the one way they end a command: one line naming the key and the fix, exit 2.

A leaf module (imports nothing of this repository), so every package can raise them without an import circle.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from tracking_contract import TrackingError  # noqa: F401 (re-exported: the one definition)

USER_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A bad config value: names the key, what is wrong and the fix."""

    def __init__(self, key: str, value: Any, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}={value!r}: {problem}. Fix: {fix}.")


def one_line(kind: str, message: object) -> str:
    """`<kind> error: <message>` on one line (Hydra's and OmegaConf's messages span several)."""
    return f"{kind} error: {' '.join(str(message).split())}"


def fail(kind: str, message: object) -> None:
    """Print the one line on stderr and exit 2 (SystemExit: Hydra lets it through). In a multi-process launch
    every rank exits 2 with the same error (the job's decisions are shared), and rank 0 alone prints it."""
    if int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0) == 0:
        print(one_line(kind, message), file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a ConfigError or TrackingError raised inside into the one-line exit."""
    try:
        yield
    except ConfigError as err:
        fail("config", str(err))
    except TrackingError as err:
        fail("tracking", str(err))
    except RunBusyError as err:
        fail("run busy", str(err))
    except RunDirError as err:
        fail("run dir", str(err))
    except (HydraException, OmegaConfBaseException) as err:  # an unknown key, a value of the wrong type
        fail("config", f"{type(err).__name__}: {err}")
    except yaml.YAMLError as err:  # a config file that is not YAML (e.g. mis-indented): PyYAML's own traceback
        fail("config", yaml_problem(err))


def yaml_problem(err: yaml.YAMLError) -> str:
    """Where a config file stops being YAML and what to do, from PyYAML's marked error."""
    mark = getattr(err, "problem_mark", None)
    where = f"{mark.name} line {mark.line + 1} column {mark.column + 1}" if mark else "a config file"
    return (f"{where} is not valid YAML ({getattr(err, 'problem', None) or err}). Fix: correct that file; "
            "keys of one mapping start in the same column, nested keys further right")


class RunBusyError(RuntimeError):
    """Another live process holds the run dir's lock: the message names it and what to do."""


class RunDirError(RuntimeError):
    """A file of a run dir cannot be read (e.g. a corrupt status.json): the message names it and the fix."""
