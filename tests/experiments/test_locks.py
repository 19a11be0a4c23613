"""Run-dir locks where flock(2) is missing (Lustre without -o flock), and a copied project's artifact locations."""

import errno
import fcntl
import os
import shutil
import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from experiments.config.errors import RunBusyError
from experiments.tracking import store as tracking
from experiments.training import run_dir as rd


@pytest.fixture
def no_flock(monkeypatch):
    def refuse(*_):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_the_lock_file_excludes_a_second_holder(tmp_path, no_flock, caplog):
    first = rd.RunLock(tmp_path).acquire()
    assert "flock is not available" in caplog.text
    assert (tmp_path / ".lock.excl").read_text().split() == [socket.gethostname(), str(os.getpid())]
    with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
        rd.RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / ".lock.excl").exists()
    rd.RunLock(tmp_path).acquire().release()


def test_a_lock_file_of_a_dead_holder_is_taken_over(tmp_path, no_flock):
    dead = 2**22 + 12345  # above any pid_max default: no such process
    (tmp_path / ".lock.excl").write_text(f"{socket.gethostname()} {dead}\n")
    rd.RunLock(tmp_path).acquire().release()
    # Another host: stale only once its heartbeat is older than HEARTBEAT_STALE_S.
    (tmp_path / ".lock.excl").write_text("elsewhere 1\n")
    with pytest.raises(RunBusyError, match="pid 1 on elsewhere"):
        rd.RunLock(tmp_path).acquire()
    old = time.time() - rd.RunLock.HEARTBEAT_STALE_S - 5
    os.utime(tmp_path / ".lock.excl", (old, old))
    rd.RunLock(tmp_path).acquire().release()


def test_waiting_lock_works_without_flock(tmp_path, no_flock):
    with rd.waiting_lock(tmp_path / ".manifest.lock"):
        assert (tmp_path / ".manifest.lock.excl").exists()
    assert not (tmp_path / ".manifest.lock.excl").exists()


def test_a_copied_project_writes_its_artifacts_into_its_own_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    uri_a = tracking.default_uri(a)
    exp = tracking.ensure_experiment(uri_a, "parcae", a / "mlartifacts")
    run = MlflowClient(uri_a).create_run(exp).info.run_id
    shutil.copytree(a, b)
    uri_b = tracking.default_uri(b)
    assert tracking.ensure_experiment(uri_b, "parcae", b / "mlartifacts") == exp
    client = MlflowClient(uri_b)
    assert client.get_experiment(exp).artifact_location == (b / "mlartifacts").resolve().as_uri()
    assert client.get_run(run).info.artifact_uri.startswith((b / "mlartifacts").resolve().as_uri() + "/")
    (tmp_path / "x.txt").write_text("x")
    client.log_artifact(run, str(tmp_path / "x.txt"))
    assert list((b / "mlartifacts").rglob("x.txt")) and not list((a / "mlartifacts").rglob("x.txt"))
    # The original is untouched.
    assert MlflowClient(uri_a).get_run(run).info.artifact_uri.startswith((a / "mlartifacts").resolve().as_uri())
