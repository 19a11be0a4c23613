"""Checkpoint, then requeue, when SLURM says a job is about to stop.

SLURM warns with SIGUSR2 before a preemption or time limit (submitit asks for it with
`--signal=USR2@<s>`) and sends SIGTERM on `scontrol requeue`, `scancel` or a preemption, followed by
SIGKILL after KillWait. submitit installs handlers for both in every job: it requeues on USR2 and
only logs TERM. A handler can't safely save a model halfway through a step, so ours only records
the signal; the training loop checks after each step, writes a checkpoint, then hands the signal on
to the previous handler (submitit's, which requeues and exits) and stops. Whatever starts the job
again — SLURM's requeue or the user re-running the command — resumes from that checkpoint, into the
same run dir and the same MLflow run. Off SLURM, SIGTERM (e.g. `kill`) gets the same clean stop.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

log = logging.getLogger("experiments.training.preemption")

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
_received: int | None = None
_previous: dict[int, Any] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum


def install() -> None:
    """Take over SIGUSR2 and SIGTERM, remembering whoever handled them before (submitit, on SLURM)."""
    global _received
    _received = None
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not _on_signal:
            _previous[signum] = current
        signal.signal(signum, _on_signal)


def requested() -> bool:
    return _received is not None


def hand_over() -> None:
    """Called once the checkpoint is written: pass the signal on (submitit may requeue), then stop."""
    # In a data-parallel job the ranks stop together (one all-reduce): a rank that did not get the signal itself
    # hands over as if it had received SLURM's warning, so that whichever rank requeues (submitit: rank 0) does.
    signum = _received if _received is not None else signal.SIGUSR2
    log.warning("signal %s%s: checkpoint written; stopping so that the job can be requeued and resume",
                signal.Signals(signum).name, "" if _received is not None else " (on another rank)")
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, None)
    raise SystemExit(f"preempted (signal {signal.Signals(signum).name}); "
                     "the same command resumes from the checkpoint")
