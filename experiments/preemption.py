"""Checkpoint, then requeue, when SLURM warns that a job is about to be preempted or time out.

submitit installs its own SIGUSR2 handler in every job (it requeues the job and exits). A handler
can't safely save a model halfway through a step, so ours only raises a flag; the training loop
checks it after each step, writes a checkpoint and then hands the signal on to submitit's handler.
The requeued job starts over with the same arguments and resumes from that checkpoint, into the same
run dir and the same MLflow run.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

log = logging.getLogger("experiments.preemption")

_requested = False
_previous: Any = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True


def install(signum: int = signal.SIGUSR2) -> None:
    """Take over `signum`, remembering whoever handled it before (submitit, under SLURM)."""
    global _previous, _requested
    _requested = False
    current = signal.getsignal(signum)
    if current is not _on_signal:
        _previous = current
    signal.signal(signum, _on_signal)


def requested() -> bool:
    return _requested


def hand_over(signum: int = signal.SIGUSR2) -> None:
    """Called after the checkpoint is written: let submitit requeue (it exits), or stop here."""
    log.warning("preemption signal: checkpoint written, handing over for requeue")
    if callable(_previous):
        _previous(signum, None)
    raise SystemExit(f"preempted (signal {signum}); resume by running the same command again")
