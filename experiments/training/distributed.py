"""Data-parallel training across processes: launch detection, process group, rank-0 side effects.

A run is distributed when its launcher says so through the environment:

* torchrun (or anything exporting the env:// variables): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT;
* SLURM with several tasks in the srun step (e.g. hydra-submitit-launcher with tasks_per_node > 1, or
  nodes > 1): under submitit, `submitit.helpers.TorchDistributedEnvironment` exports those variables
  (master = the job's first node, port = MASTER_PORT or one derived from the job id); a bare `srun` is
  parsed by hand from SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID / SLURM_STEP_NODELIST (port:
  MASTER_PORT or one derived from SLURM_JOB_ID).

Anything else is one process, and nothing here changes it. The backend is nccl on CUDA, gloo on CPU;
each rank takes the GPU of its local rank:

    # one node, 2 processes (CPU: gloo; train.device=cuda: nccl, one GPU per process)
    torchrun --standalone --nproc_per_node=2 -m experiments.pretrain train.batch_size=16 ...
    # SLURM through submitit: one task per GPU
    python -m experiments.pretrain -m launcher=slurm hydra.launcher.tasks_per_node=8 \
        hydra.launcher.gpus_per_node=8 train.device=cuda ...

`train.batch_size` stays the global batch: each of W ranks takes rows [r·B/W, (r+1)·B/W) of the step's
batch (see experiments.training.trainer), so the union over ranks is the single-process batch.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from experiments.config.launch_env import detect, env_rank
from parcae.sampling import DepthPlan, row_initial_states

log = logging.getLogger("experiments.training.distributed")


def is_main() -> bool:
    """True on the process that owns side effects (status files, tracking, checkpoints): global rank 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_rank() == 0


@dataclass
class Context:
    """The process group as the trainer sees it; world_size == 1 means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a decision: skip, busy, failed); returned as is in one process."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around the model (no-op for one process)."""
        if not self.enabled:
            return model
        # Buffers (rotary tables) are deterministic functions of the config: no per-forward broadcast.
        ids = [self.device.index] if self.device.type == "cuda" else None
        params = inspect.signature(DDP.__init__).parameters
        no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {
            "broadcast_buffers": False}
        return DDP(model, device_ids=ids, output_device=ids[0] if ids else None, **no_buffer_sync)

    def no_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        if self.enabled and not sync:
            return model.no_sync()
        return contextlib.nullcontext()


TIMEOUT_ENV = "PARCAE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0


def collective_timeout() -> datetime.timedelta:
    """How long any collective may wait for a rank before it fails (PARCAE_DIST_TIMEOUT_S, default 30 min).

    Without a bound, a rank that died or went its own way holds every other GPU of the job until the wall-clock
    limit. It must cover the longest time one rank may legitimately work alone: rank 0 building a corpus's
    shards on first use, or copying a checkpoint to host memory."""
    return datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))


def setup(device: str) -> Context:
    """Join (or reuse) the process group of this launch and pick this rank's device.

    Idempotent: a Hydra multirun inside one torchrun launch trains several jobs in the same processes.
    """
    env = detect()
    dev = torch.device(device)
    if env.world_size <= 1:
        return Context(0, 1, 0, dev)
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError(f"train.device={device!r} but no CUDA device is visible on rank {env.rank}")
        dev = torch.device("cuda", env.local_rank % count)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        # NCCL: a collective that times out aborts the communicator (and the process) instead of hanging.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                                timeout=collective_timeout(), **kwargs)
        atexit.register(_shutdown)
        if env.rank == 0:
            log.info("distributed: %d processes (%s, %s backend)", env.world_size, env.source, backend)
    elif dist.get_world_size() != env.world_size:
        raise RuntimeError(f"process group has {dist.get_world_size()} ranks, the launch {env.world_size}")
    return Context(env.rank, env.world_size, env.local_rank, dev)


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rows_of_global_draws(draws: "GlobalDraws | None", a: int, b: int, device: torch.device) -> dict:
    """Forward kwargs that make the model use rows [a, b) of the global batch's draws.

    The depths are drawn for the whole global batch (a few integers per row, same generator and order as
    one forward over it would draw them); h_0 of row i comes from (the step's seed, i) alone
    (parcae.sampling.row_initial_states), so each rank draws only its own rows and any split of the batch
    over ranks and micro-batches trains row i alike.
    """
    if draws is None:
        return {}
    sliced = DepthPlan(free=draws.plan.free[a:b], grad=draws.plan.grad[a:b])
    h0 = row_initial_states(draws.state_init, range(a, b), draws.seq_len, draws.d_model, device, draws.seed)
    return {"depth_plan": sliced, "initial_state": h0, "generator": None}


@dataclass
class GlobalDraws:
    plan: "object"  # parcae.sampling.DepthPlan for the global batch
    seed: int  # this step's h_0 seed (one draw of the training generator)
    state_init: str
    seq_len: int
    d_model: int


def draw_global(model: torch.nn.Module, model_cfg, batch_size: int, seq_len: int,
                generator: torch.Generator, step: int) -> GlobalDraws | None:
    """The global batch's depth plan and the step's h_0 seed, drawn in that order from the training generator.

    None for a model without a loop (the Transformer draws nothing).
    """
    if model_cfg.kind != "parcae":
        return None
    plan = model.depth_plan(batch_size, None, generator, seq_len=seq_len, step=step)
    seed = int(torch.randint(0, 2**31, (1,), generator=generator))
    return GlobalDraws(plan, seed, model_cfg.state_init, seq_len, model_cfg.d_model)
