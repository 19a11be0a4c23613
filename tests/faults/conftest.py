"""Fixtures of the fault-injection harness: one uninterrupted reference run per test session (shared by the
pytest-xdist workers), an empty migrated MLflow store and a data cache every job reuses.

The full phase × signal matrix is marked `faults_full` and runs only when asked for by name:
`pytest -p no:xdist tests/faults -m faults_full` (the default suite runs a representative subset)."""

import fcntl
import os
import shutil
from pathlib import Path

import pytest

import harness as h

FULL = "faults_full"


def pytest_collection_modifyitems(config, items):
    """Deselect the full matrix unless the -m expression names it (make test's "not slurm" does not)."""
    if FULL in (config.getoption("markexpr", "") or ""):
        return
    full = [item for item in items if FULL in item.keywords]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [item for item in items if FULL not in item.keywords]


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """A folder every worker of this session sees: the xdist workers' common parent, else this session's own."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "faults-shared"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def reference(shared) -> tuple[Path, h.Snapshot]:
    """The uninterrupted run (built once per session under a lock; the other workers wait and read it)."""
    root = shared / "reference"
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            for stale in (root, shared / "cache", shared / "template.db"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            h.empty_store(shared / "template.db")
            out = h.launch(h.new_root(root, shared / "template.db"), cache=shared / "cache")
            assert out.returncode == 0, out.tail()
            (shared / "done").touch()
    snap = h.snapshot(root)
    assert h.violations(root, snap) == []  # the reference itself holds every invariant
    return root, snap


@pytest.fixture
def ref(reference) -> h.Snapshot:
    return reference[1]


@pytest.fixture
def cache(shared, reference) -> Path:
    return shared / "cache"


@pytest.fixture
def root(tmp_path, shared, reference) -> Path:
    """A fresh project root with an empty store."""
    return h.new_root(tmp_path / "root", shared / "template.db")


@pytest.fixture
def finished(tmp_path, reference) -> Path:
    """A project root holding the reference's finished run (a copy: tests change it)."""
    copy = tmp_path / "finished"
    shutil.copytree(reference[0], copy)
    return copy
