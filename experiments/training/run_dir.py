"""A run's own folder: the record that outlives the tracking server.

runs/<config hash>/ holds config.yaml (the resolved config, secrets filtered), status.json (status
marker, MLflow run id, final metrics, the sweeps it belongs to), metrics.jsonl, checkpoint.pt and
.lock (held by the one process working on the run). Identity is the folder name, so "is this grid
point done?" is one file read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments.config.errors import RunBusyError, RunDirError
from experiments.training.faults import fault_point

log = logging.getLogger("experiments.training.run_dir")
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
    fault_point("status.before_write")
    with open(tmp, "w") as f:
        f.write(json.dumps(status, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / STATUS_NAME)
    fault_point("status.after_write")
    return status


def clean_temp_files(run_dir: Path) -> list[Path]:
    """Remove what writers killed mid-write left (only safe while holding the run's lock)."""
    removed = sorted(Path(run_dir).glob(TMP_GLOB))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# What flock(2) raises on a filesystem that does not support it (Lustre without -o flock, some NFS mounts).
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLock:
    """An exclusive lock on a run dir: one process trains a run at a time.

    flock(2) on runs/<hash>/.lock: the kernel drops the lock when its process dies (kill -9 included),
    so a lock left by a dead process is taken over by the next start without any cleanup. The file
    holds "host pid" of the holder, for the message a second process prints.

    Where the filesystem refuses flock (Lustre mounted without `flock`, some NFS setups), the lock falls back,
    with one warning, to a lock file created with O_EXCL (`.lock.excl`, atomic on any POSIX filesystem) holding
    "host pid" and kept fresh by a heartbeat thread: a holder on this host whose pid is gone, or one whose
    heartbeat is older than HEARTBEAT_STALE_S (another host died), is taken over."""

    HEARTBEAT_S = 30.0
    HEARTBEAT_STALE_S = 300.0

    def __init__(self, run_dir: Path, name: str = LOCK_NAME):
        self.path = Path(run_dir) / name
        self.excl_path = Path(run_dir) / (name + ".excl")
        self._fd: int | None = None
        self._beat: threading.Event | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            raise self._busy(holder, self.path) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _NO_FLOCK:
                raise
            log.warning("flock is not available for %s (%s): using an O_EXCL lock file with a heartbeat instead "
                        "(%s)", self.path.parent, err.strerror or err, self.excl_path.name)
            return self._acquire_excl()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _busy(holder: list[str], path: Path) -> RunBusyError:
        who = f"pid {holder[1]} on {holder[0]}" if len(holder) >= 2 else "another process"
        return RunBusyError(f"run {path.parent.name} is already being trained by {who} (lock {path}); wait for "
                            f"it to finish, then rerun to skip or resume it")

    def _acquire_excl(self) -> "RunLock":
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.excl_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._excl_stale():
                    holder = self.excl_path.read_text(errors="replace").split() if self.excl_path.exists() else []
                    raise self._busy(holder, self.excl_path) from None
                self.excl_path.unlink(missing_ok=True)
                continue
            os.write(fd, me.encode())
            os.close(fd)
            self._beat = threading.Event()
            threading.Thread(target=self._heartbeat, args=(self._beat,), name="run-lock-heartbeat",
                             daemon=True).start()
            return self
        raise self._busy([], self.excl_path)

    def _excl_stale(self) -> bool:
        try:
            holder = self.excl_path.read_text(errors="replace").split()
            age = time.time() - self.excl_path.stat().st_mtime
        except FileNotFoundError:
            return True
        if len(holder) >= 2 and holder[0] == socket.gethostname() and holder[1].isdigit():
            return not process_alive(int(holder[1]))
        return age > self.HEARTBEAT_STALE_S

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.HEARTBEAT_S):
            try:
                os.utime(self.excl_path)
            except OSError:
                return

    def held(self) -> bool:
        """Whether some process holds the lock now (for a status, never to decide who trains): a shared flock
        probe, released at once (a job claiming the lock in that instant sees it busy and polls again), or, on
        the O_EXCL fallback, a lock file that is not stale. False when there is no lock file yet."""
        if self.excl_path.exists():
            return not self._excl_stale()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no flock here: the holder used the O_EXCL file, checked above
            return False
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._beat is not None:
            self._beat.set()
            self._beat = None
            self.excl_path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def waiting_lock(path: Path, poll_s: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting for it: a short critical section (creating a store, adding to a
    sweep's manifest): RunLock (flock, or its O_EXCL file where flock is missing), polled until free."""
    lock = RunLock(Path(path).parent, Path(path).name)
    while True:
        try:
            lock.acquire()
            break
        except RunBusyError:
            time.sleep(poll_s)
    try:
        yield
    finally:
        lock.release()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
