"""A run's own folder: the record that outlives the tracking server.

runs/<config hash>/ holds config.yaml (the resolved config, secrets filtered), status.json (status
marker, MLflow run id, final metrics, the sweeps it belongs to), metrics.jsonl, checkpoint.pt and
.lock (held by the one process working on the run). Identity is the folder name, so "is this grid
point done?" is one file read.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from experiments.config.errors import RunBusyError, RunDirError

STATUS_NAME = "status.json"
LOCK_NAME = ".lock"
FINISHED, RUNNING, FAILED, DIVERGED = "finished", "running", "failed", "diverged"
TMP_GLOB = ".*.tmp*"  # what atomic writers (status, checkpoint) leave behind when killed mid-write


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json as a dict ({} when absent); RunDirError naming the file when it is not valid JSON."""
    path = Path(run_dir) / STATUS_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        status = json.loads(text)
        if not isinstance(status, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:
        raise RunDirError(f"{path} is corrupt ({err}); delete it and rerun the same command: the run is found "
                          f"again by its config hash and resumes from its checkpoint") from None
    return status


def write_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into status.json atomically (write a temporary file, fsync, rename)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {**read_status(run_dir), **fields}
    tmp = run_dir / f".{STATUS_NAME}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(status, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / STATUS_NAME)
    return status


def clean_temp_files(run_dir: Path) -> list[Path]:
    """Remove what writers killed mid-write left (only safe while holding the run's lock)."""
    removed = sorted(Path(run_dir).glob(TMP_GLOB))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


class RunLock:
    """An exclusive lock on a run dir: one process trains a run at a time.

    flock(2) on runs/<hash>/.lock: the kernel drops the lock when its process dies (kill -9 included),
    so a lock left by a dead process is taken over by the next start without any cleanup. The file
    holds "host pid" of the holder, for the message a second process prints."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"pid {holder[1]} on {holder[0]}" if len(holder) == 2 else "another process"
            raise RunBusyError(f"run {self.path.parent.name} is already being trained by {who} (lock "
                               f"{self.path}); wait for it to finish, then rerun to skip or resume it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
