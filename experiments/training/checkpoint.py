"""Atomic checkpoints holding everything a resumed run needs to be the same run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from experiments.config.errors import RunDirError

CHECKPOINT_NAME = "checkpoint.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader (or a run killed
    mid-write) sees either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    # weights_only: a checkpoint is data, never code.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, overwritten, or not a checkpoint at all
        raise RunDirError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]}); delete "
                          "it to start the run again from step 0, or restore it from a backup") from None
