"""Atomic checkpoints holding everything a resumed run needs to be the same run.

On a GPU a checkpoint is gigabytes on a shared filesystem. `AsyncWriter` copies the state to host memory
(the only part the other ranks wait for) and writes it in a background thread; whatever must follow the write
(appending the metrics it covers) runs once the file is on disk, in the training thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from experiments.config.errors import RunDirError
from experiments.training.faults import fault_point

CHECKPOINT_NAME = "checkpoint.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader (or a run killed
    mid-write) sees either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fault_point("checkpoint.before_write")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fault_point("checkpoint.after_write")


def load(path: Path, mmap: bool = False) -> dict[str, Any] | None:
    """The checkpoint (None when there is none). mmap=True maps the tensors instead of reading them: cheap
    when only the bookkeeping (step, carried metrics, final evaluation) is wanted."""
    path = Path(path)
    if not path.exists():
        return None
    # weights_only: a checkpoint is data, never code.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # truncated, overwritten, or not a checkpoint at all
        raise RunDirError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]}); delete "
                          "it to start the run again from step 0, or restore it from a backup") from None


def to_host(obj: Any) -> Any:
    """A copy of a state (nested dicts/lists of tensors) in host memory, detached from the training tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    return obj


class AsyncWriter:
    """One checkpoint write in flight at a time, in a background thread.

    `submit(state, then)` waits for the previous write (and runs its `then`), copies `state` to host memory and
    starts writing it; `wait()` finishes the one in flight. A write error is raised in the training thread by the
    next submit/wait, so a full disk fails the run instead of passing silently."""

    def __init__(self, path: Path, background: bool = True):
        self.path, self.background = Path(path), background
        self._thread: threading.Thread | None = None
        self._then: Callable[[], None] | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict[str, Any], then: Callable[[], None] | None = None) -> None:
        self.wait()
        host = to_host(state)
        if not self.background:
            save(self.path, host)
            if then:
                then()
            return
        self._then = then

        def write() -> None:
            try:
                save(self.path, host)
            except BaseException as err:  # noqa: BLE001 - re-raised in the training thread
                self._error = err

        self._thread = threading.Thread(target=write, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def abandon(self) -> None:
        """On a failure: let the write in flight finish if it can, but run nothing after it."""
        self._then = None
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self._error = None

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error, self._then = self._error, None, None
            raise err
        then, self._then = self._then, None
        if then:
            then()
