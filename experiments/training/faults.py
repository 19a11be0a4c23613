"""Named phase boundaries of a job's lifecycle, where the fault-injection tests stop the process.

`fault_point("checkpoint.after_write")` does nothing unless the environment variable PARCAE_FAULT (set
only by tests, see tests/faults/) names that point. Its value is `point[:signal[:rank[:nth]]]`:

    PARCAE_FAULT=metrics.after_jsonl:SIGKILL          # the first time any rank passes the point
    PARCAE_FAULT=checkpoint.before_write:SIGINT:1:2   # the second time rank 1 passes it
    PARCAE_FAULT=metrics.before_jsonl:ENOSPC          # raise OSError(ENOSPC) instead of a signal
    PARCAE_FAULT=train.step:SLEEP20:0:3               # hold rank 0 for 20 s (a slow job, for races)

The signal is sent to the process itself, so what follows is what a real kill, Ctrl-C, `scancel` or a
preemption does at that moment. The points (the lifecycle's order, experiments.training.job):

    train.step                                      after each optimizer step (every rank; nth = the step)
    status.before_write / status.after_write        every write of status.json
    checkpoint.before_write / checkpoint.after_write  the checkpoint file (written atomically)
    metrics.before_jsonl / metrics.after_jsonl      appending a flush to metrics.jsonl
    metrics.before_mlflow / metrics.after_mlflow    handing a flush to MLflow
    eval.final                                      between the final evaluation's loop counts
    artifacts.after_log                             after the model artifacts reach MLflow
    finish.before_mlflow                            status.json says finished, MLflow not yet told
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "PARCAE_FAULT"
_seen: dict[str, int] = {}


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)


def fault_point(name: str) -> None:
    """Stop here when PARCAE_FAULT names this point (tests only); otherwise one dict lookup."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    parts = rest.split(":") if rest else []
    how = parts[0] if parts else "SIGKILL"
    rank = int(parts[1]) if len(parts) > 1 and parts[1] != "" else None
    nth = int(parts[2]) if len(parts) > 2 else 1
    if rank is not None and rank != _rank():
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] != nth:
        return
    if how.startswith("SLEEP"):
        time.sleep(float(how[5:]))
        return
    if how == "ENOSPC":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    os.kill(os.getpid(), getattr(signal, how))
