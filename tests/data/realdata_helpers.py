"""Shared by the real-data and evaluation tests: documents to write into test-made files, and the entry
points run as the user runs them (subprocesses), with every Hugging Face download switched off."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# A grid point that trains in seconds on 2 cores.
SMALL = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.eval_every=10",
         "train.checkpoint_every=5", "train.test_loops=[1,2]", "train.threads=1", "model.mean_recurrence=2"]


def stdlib_texts(n: int) -> list[str]:
    from experiments.data.corpus import stdlib_documents

    return [d.decode("utf-8", "replace") for _, d in stdlib_documents()[:n]]


def python_module(module: str, *args: str, wait: bool = True, timeout: float = 300):
    cmd = [sys.executable, "-m", module, *args]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for_file(proc: subprocess.Popen, root: Path, pattern: str, timeout: float = 120) -> Path | None:
    """The first file matching root/pattern while proc still runs, or None once it has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
        time.sleep(0.02)
    return None
