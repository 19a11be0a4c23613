"""The launch environment: which process of how many this is, read from the launcher's variables only.

torchrun (or anything exporting the env:// variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), SLURM through submitit, or a bare `srun` (SLURM_PROCID, SLURM_STEP_NUM_TASKS,
SLURM_LOCALID, SLURM_STEP_NODELIST); anything else is one process. No torch here: validation
(experiments.config.plan) reads the world size before any process group exists.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" (env://), "submitit", "slurm" or "single"


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM nodelist ("gpu[01-04,07],cpu3" → "gpu01"); scontrol when available."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\],]+))?", nodelist)
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(2)
    return prefix + ranges.split("-")[0] if ranges else prefix


def env_world_size() -> int:
    """The world size the launcher announces, read from the environment only (no process group needed).

    Under SLURM it is the task count of the srun step this process belongs to (SLURM_STEP_NUM_TASKS, which
    submitit's srun also sets), not the job's SLURM_NTASKS: a batch script that runs python directly in a
    multi-task allocation is one process, and must not wait for peers that never start.
    """
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_STEP_NUM_TASKS"):
        return max(int(os.environ["SLURM_STEP_NUM_TASKS"]), 1)
    return 1


def env_rank() -> int:
    """This process's global rank from the environment (0 when not distributed)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("SLURM_PROCID", "0") or 0) if env_world_size() > 1 else 0


def detect() -> LaunchEnv:
    """Read the launch from the environment; for SLURM, export the env:// variables torch needs."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return LaunchEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                         int(os.environ.get("LOCAL_RANK", "0")), "torchrun")
    if env_world_size() <= 1:
        return LaunchEnv(0, 1, 0, "single")
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        try:
            from submitit.helpers import TorchDistributedEnvironment
        except ImportError:  # pragma: no cover - submitit is a dependency, but a bare srun needs no submitit
            TorchDistributedEnvironment = None
        if TorchDistributedEnvironment is not None:
            # GPUs are picked below by local rank, so CUDA_VISIBLE_DEVICES is left as SLURM set it.
            env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            return LaunchEnv(env.rank, env.world_size, env.local_rank, "submitit")
    rank, world = int(os.environ["SLURM_PROCID"]), env_world_size()
    local = int(os.environ.get("SLURM_LOCALID", "0"))
    job = os.environ.get("SLURM_JOB_ID", "0")
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or "localhost"
    os.environ.setdefault("MASTER_ADDR", _first_slurm_host(nodes))
    os.environ.setdefault("MASTER_PORT", str(random.Random(job).randint(20000, 60000)))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
    return LaunchEnv(rank, world, local, "slurm")
