"""Shared helpers for the experiments tests: run the real entry point in a subprocess."""

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A grid point small enough to train in seconds on 2 cores.
SMALL = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.eval_every=10",
         "train.checkpoint_every=5", "train.test_loops=[1,2,4,8]", "train.threads=1"]


def sweep(root: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The sweep driver (python -m experiments.sweep, what make sweep runs), one thread per process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "experiments.sweep", f"paths.root={root}", *overrides], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def pretrain(root: Path, *overrides: str, timeout: float = 600, wait: bool = True):
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants its flags (-m) before overrides
    cmd = [sys.executable, "-m", "experiments.pretrain", *flags, f"paths.root={root}",
           *(o for o in overrides if not o.startswith("-"))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not wait:
        # A shell's background job starts with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt; give the child the default disposition so tests can Ctrl-C it anywhere.
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
