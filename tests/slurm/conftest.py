"""A real single-node SLURM for the tests marked `slurm` (scripts/slurm/start.sh), stopped by pid."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAEMONS = ("munged", "slurmctld", "slurmd")


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except OSError:
        return False


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("needs Debian's SLURM packages (apt-get) to start a test cluster")
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([str(REPO / "scripts/slurm/start.sh"), str(state)], capture_output=True, text=True,
                           timeout=600)
    assert start.returncode == 0, start.stderr
    pids = {d: int((state / f"{d}.pid").read_text()) for d in DAEMONS}
    conf = str(state / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    subprocess.run([str(REPO / "scripts/slurm/stop.sh"), str(state)], timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    left = {d: pid for d, pid in pids.items() if _alive(pid)}
    assert not left, f"stop.sh left daemons running: {left}"
