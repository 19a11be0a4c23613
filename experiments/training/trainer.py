"""The training loop: AdamW or MuonAdamW with a WSD schedule, periodic validation, checkpoints, guard rails.

Data-parallel when launched so (torchrun, or SLURM with several tasks; see experiments.training.distributed):
train.batch_size is the global batch, each rank trains on its contiguous share of it, optionally in
micro-batches of train.micro_batch_size with gradient accumulation, and rank 0 alone writes metrics and
checkpoints. A W-process run reproduces the single-process run up to float rounding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from experiments.training import checkpoint
from experiments.training import distributed
from experiments.training import preemption
from experiments.training import record
from experiments.training.faults import fault_point
from experiments.training.progress import STATE_NAME, Progress
from experiments.config.errors import ConfigError
from experiments.config.plan import cooldown_start, default_loops, eval_loops, warmup_steps_of
from experiments.data.bpb import bpb_from_tokens_per_byte
from experiments.data.corpus import PackedStream
from experiments.data.packing import check_data_position, data_position
from parcae import ModelConfig, build_model
from parcae.optim import MuonAdamW, param_groups
from parcae.sampling import row_initial_states

log = logging.getLogger("experiments.training.trainer")
LOG_EVERY = 10  # steps between train/* metrics


def wsd_multiplier(step: int, total: int, warmup_fraction: float, cooldown_fraction: float,
                   warmup_steps: int | None = None) -> float:
    """Warm-up, stable, decay: linear warm-up, constant, then linear cooldown to 0 at `total`. The warm-up is a
    fraction of `total`, or `warmup_steps` when given (train.warmup_tokens: the same for runs of any length)."""
    warmup = int(warmup_fraction * total) if warmup_steps is None else warmup_steps
    start = cooldown_start(total, cooldown_fraction)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step >= start and start < total:
        return max(0.0, (total - step) / (total - start))
    return 1.0


def build_optimizer(model: torch.nn.Module, t, total_steps: int) -> torch.optim.Optimizer:
    """AdamW with weight decay on the blocks' matrices only, or the reference's MuonAdamW (Parcae arXiv 2604.12946 App. Q).

    Both use parcae.optim's split: embeddings, norms, 1-D, injection parameters and C never decay.
    """
    if t.optimizer == "muon":
        return MuonAdamW(model, adamw_lr=t.lr, muon_lr=t.muon_lr, betas=(t.beta1, t.beta2), eps=t.eps,
                         muon_weight_decay=t.weight_decay, total_steps=total_steps)
    groups = param_groups(model)
    # Fused: one kernel per step, and it can skip a non-finite step on the device (see clip_and_step).
    return torch.optim.AdamW([{"params": groups["muon"], "weight_decay": t.weight_decay},
                              {"params": groups["adamw"], "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=True)


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                  grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip the gradient, then step unless the loss or the gradient norm is non-finite.

    Returns (grad_norm, nonfinite as a 0/1 float tensor). Fused AdamW takes the decision on the device
    (its found_inf input skips the update and leaves its state as it was, as GradScaler uses it), so a
    step never waits for the accelerator; other optimizers read the flag on the host.
    """
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    nonfinite = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
    if isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults.get("fused"):
        optimizer.found_inf = nonfinite
        optimizer.step()
    elif not bool(nonfinite):
        optimizer.step()
    return grad_norm, nonfinite


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, x: torch.Tensor,
               y: torch.Tensor, generator: torch.Generator, step: int, device: torch.device, precision: str,
               grad_clip: float, forward_kw: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step of one process without gradient accumulation: forward (drawing its depths and
    h_0 from `generator`, or using the draws in `forward_kw`), backward, clip_and_step, schedule. The trainer's
    step, and what `make bench` times (benchmarks/bench_train.py). Returns (loss, grad_norm, nonfinite), all on
    the device."""
    kw = forward_kw if forward_kw is not None else {"generator": generator}
    with autocast(device, precision):
        _, loss = model(to_device(x, device), to_device(y, device), step=step, **kw)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm, nonfinite = clip_and_step(model, optimizer, loss, grad_clip)
    scheduler.step()
    return loss, grad_norm, nonfinite


def step_metrics(raw_model: torch.nn.Module, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float, done: int,
                 tokens_per_step: int, skipped: int, tokens_per_s: float) -> dict[str, float]:
    """The train/* and monitor/* metrics of a log step; the only host syncs of a step happen here."""
    metrics = {"train/loss": loss.item(), "train/grad_norm": grad_norm.item(), "train/lr": lr,
               "train/tokens": done * tokens_per_step, "train/skipped_steps": skipped,
               "train/tokens_per_s": tokens_per_s}
    if hasattr(raw_model, "injection_stats"):
        # State monitors come from the last forward: with DDP or micro-batches, rank 0's last one.
        metrics.update({f"monitor/{k}": v for k, v in raw_model.injection_stats().items()})
    return metrics


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward's precision: fp32 as is, or bf16 autocast (matmuls in bf16, norms kept in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch to the device without blocking: pinned, so the copy overlaps the previous step's work."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def batch_split(batch_size: int, micro_batch_size: int | None, world_size: int) -> tuple[int, int]:
    """(rows per rank, rows per micro-batch) of a global batch; ConfigError naming the key if uneven.

    World size is known only at launch, so this runs when training starts (plan() checks what the
    environment announces, and the parts that need no world size)."""
    micro = micro_batch_size or batch_size // max(world_size, 1)
    if micro_batch_size is None and batch_size % world_size:
        raise ConfigError("train.batch_size", batch_size,
                          f"the global batch must split evenly over the {world_size} processes of this launch",
                          f"use a multiple of {world_size}, or launch a number of processes that divides it")
    if micro < 1 or batch_size % (world_size * micro):
        raise ConfigError("train.batch_size", batch_size,
                          f"must be divisible by world_size × train.micro_batch_size = {world_size} × "
                          f"{micro_batch_size} = {world_size * (micro_batch_size or 0)} (each process takes "
                          f"batch_size / world_size rows per step, in micro-batches of micro_batch_size)",
                          f"use a multiple of {world_size * (micro_batch_size or 1)}, or change "
                          f"train.micro_batch_size or the number of processes")
    return batch_size // world_size, micro


def auto_micro_batch(model_cfg: ModelConfig, t, ctx: "distributed.Context") -> int | None:
    """train.micro_batch_size, or on a GPU when it is null, the largest that parcae.memory estimates to fit this
    GPU's memory (gradient accumulation makes up the rest of the process's share; the result does not change)."""
    given = getattr(t, "micro_batch_size", None)
    if given is not None or ctx.device.type != "cuda" or t.batch_size % ctx.world_size:
        return given
    from parcae.memory import choose_micro_batch

    gpu_gb = torch.cuda.get_device_properties(ctx.device).total_memory / 1e9
    est = choose_micro_batch(model_cfg, t.batch_size // ctx.world_size, gpu_gb=gpu_gb,
                             precision=getattr(t, "precision", "fp32"), optimizer=t.optimizer,
                             world_size=ctx.world_size,
                             activation_checkpointing=bool(getattr(t, "activation_checkpointing", False)))
    if est is None:
        raise ConfigError("train.micro_batch_size", None, f"not even one sequence of {model_cfg.name} is estimated to "
                          f"fit this GPU's {gpu_gb:.0f} GB (parcae.memory)",
                          "set train.activation_checkpointing=true, or use a GPU with more memory")
    if ctx.is_main:
        log.info("micro-batch %d per GPU (estimated peak %.1f GB of %.0f GB; parcae.memory)", est.micro_batch,
                 est.total_gb, gpu_gb)
    return est.micro_batch


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_steps: int | None,
             batch_size: int, seed: int, ctx: "distributed.Context | None" = None,
             precision: str = "fp32") -> float:
    """Mean validation loss (nats/token) at `num_steps` loops, with a fixed-seed initial state per row.

    Split across the ranks of a data-parallel launch (rank r takes every W-th batch) and summed with one
    all-reduce, under the training precision's autocast, `batch_size` rows per forward. Row i's h_0 depends only
    on (seed, i) (parcae.sampling.row_initial_states), so the number is the same on any number of processes."""
    ctx = ctx or distributed.Context(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    device = ctx.device
    cfg = getattr(model, "config", None)
    total = torch.zeros(2, dtype=torch.float64)
    starts = list(range(0, len(x), batch_size))
    for i in starts[ctx.rank::ctx.world_size]:
        xb, yb = to_device(x[i:i + batch_size], device), to_device(y[i:i + batch_size], device)
        kw = {}
        if cfg is not None and getattr(cfg, "kind", None) == "parcae":
            kw["initial_state"] = row_initial_states(cfg.state_init, range(i, i + len(xb)), xb.shape[1],
                                                     cfg.d_model, device, seed)
        with autocast(device, precision):
            _, loss = model(xb, yb, num_steps=num_steps, **kw)
        total += torch.tensor([float(loss) * yb.numel(), yb.numel()], dtype=torch.float64)
    if ctx.enabled:
        total = ctx.all_reduce_sum(total.to(device)).cpu()
    model.train(was_training)
    return float(total[0] / total[1])


@dataclass
class TrainResult:
    status: str  # finished | diverged
    steps: int
    final: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0


class MetricSink:
    """Buffers metric rows; `flush(upto)` appends the rows of steps <= upto to metrics.jsonl (the record, see
    experiments.training.record), then hands the same rows to the tracker. The trainer flushes only once a
    checkpoint covering those steps is on disk; nothing reaches MLflow before it is in the record."""

    def __init__(self, path: Path, tracker=None):
        self.path = path
        self.tracker = tracker
        self._rows: list[dict] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._rows.append({"step": step, **metrics})

    def flush(self, upto: int | None = None) -> None:
        rows = [r for r in self._rows if upto is None or r["step"] <= upto]
        self._rows = [r for r in self._rows if not (upto is None or r["step"] <= upto)]
        record.append_rows(self.path, rows)
        if self.tracker and rows:
            record.send(self.tracker, rows)

    def pending(self, upto: int | None = None) -> list[dict]:
        """The rows not flushed yet: a checkpoint carries them, since it is written before they are flushed."""
        return [dict(r) for r in self._rows if upto is None or r["step"] <= upto]


def train(model_cfg: ModelConfig, train_cfg, steps: int, stream: PackedStream, val: tuple[torch.Tensor, torch.Tensor],
          run_dir: Path, sink: MetricSink, on_eval: Callable[[int, float], None] | None = None,
          tokens_per_byte: float | None = None, label: str | None = None, final_eval: bool = True,
          keep_at: frozenset[int] = frozenset(), keep: Callable[[int], None] | None = None) -> TrainResult:
    """Train to `steps`, resuming from run_dir's checkpoint if there is one.

    The job has already cut metrics.jsonl back to that checkpoint (experiments.training.record.restore); a
    checkpoint that holds the final evaluation ends the run without evaluating again. on_eval(step, val_loss) is
    called after each periodic validation (e.g. to prune an Optuna trial by raising); a preemption signal (see
    experiments.training.preemption) checkpoints and hands over for requeue. tokens_per_byte (of the validation
    labels) adds bits per byte next to every validation loss. label names the job in its progress (the grid
    point, e.g. `mu4-C2e12`): a bar on a terminal, plain lines elsewhere, and run_dir/progress.json.

    Every decision that changes what the ranks do next (checkpoint now, stop for a preemption) is taken from one
    all-reduce per step, so all ranks take it together.

    A cooldown branch's trunk (experiments.training.branching) trains with final_eval=False: it ends with a
    checkpoint at `steps` instead of an evaluation ("paused"), and at every step of `keep_at` (and at `steps`) it
    checkpoints, waits for the file, and calls keep(step) on rank 0 (which keeps a copy for a branch).
    """
    t = train_cfg
    ctx = distributed.setup(t.device)
    local_bs, micro_bs = batch_split(t.batch_size, auto_micro_batch(model_cfg, t, ctx), ctx.world_size)
    n_micro = local_bs // micro_bs
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(getattr(t, "tf32", False))
        torch.backends.cudnn.allow_tf32 = bool(getattr(t, "tf32", False))
    torch.manual_seed(t.seed)  # parameter init
    raw_model = build_model(model_cfg).to(device)
    if getattr(t, "activation_checkpointing", False) and hasattr(raw_model, "checkpoint_iterations"):
        raw_model.checkpoint_iterations = True
    if getattr(t, "compile", False):
        raw_model.compile_blocks()
    precision = getattr(t, "precision", "fp32")
    optimizer = build_optimizer(raw_model, t, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: wsd_multiplier(s, steps, t.warmup_fraction, t.cooldown_fraction,
                                            warmup_steps_of(t, t.batch_size * model_cfg.block_size)))
    gen = torch.Generator().manual_seed(t.seed + 1)  # depth draws and the steps' h_0 seeds
    ckpt_path = run_dir / checkpoint.CHECKPOINT_NAME
    main = ctx.is_main
    # Rank 0 writes in the background (on a GPU, gigabytes to a shared filesystem); the others go on training.
    writer = checkpoint.AsyncWriter(ckpt_path, background=device.type == "cuda")

    def emit(metrics: dict[str, float], step: int) -> None:
        if main:
            sink.log(metrics, step)

    start, skipped = 0, 0
    state = checkpoint.load(ckpt_path)  # every rank reads the checkpoint rank 0 wrote
    if state is not None:
        check_data_position(stream, state.get("data"))
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, skipped = state["step"], state["skipped_steps"]
        if main:
            log.info("resuming from step %d/%d (%s)", start, steps, ckpt_path)
        if start >= steps and state.get("final"):
            # Killed after the final checkpoint: the evaluation is in it (and in the record). Never evaluate twice.
            return TrainResult("finished", steps, dict(state["final"]), skipped)
        if start >= steps and not final_eval:
            return TrainResult("paused", start, skipped_steps=skipped)
    model = ctx.wrap(raw_model)
    skipped_new = torch.zeros((), device=device)  # skipped steps not yet read back from the device

    def settle_skipped() -> int:
        """All skipped steps so far: reads the device counter, so only log and save steps call it."""
        nonlocal skipped, skipped_new
        skipped += int(skipped_new.item())
        skipped_new = torch.zeros((), device=device)
        return skipped

    last_save = time.monotonic()

    def save_checkpoint(step: int, final: dict[str, float] | None = None, wait: bool = False) -> None:
        """The checkpoint first, then the metrics it covers (MetricSink.flush after the write): a kill during the
        write leaves the old checkpoint and no metric beyond it; a kill between the two leaves the rows in the
        checkpoint, and the next start adds them to the record (record.restore). wait: on disk before returning
        (a preemption hand-over, the end of the run); otherwise rank 0 writes in the background."""
        nonlocal last_save
        settle_skipped()
        if main:
            writer.submit({
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step, "skipped_steps": skipped,
                "data": data_position(stream, step, t.batch_size), "metrics": sink.pending(step),
                "final": dict(final or {}),
            }, then=lambda: sink.flush(step))
            if wait:
                writer.wait()
        last_save = time.monotonic()
        if wait:
            ctx.barrier()  # nobody hands over for requeue, or ends, before the checkpoint is on disk

    val_x, val_y = val

    def bpb_of(losses: dict[str, float]) -> dict[str, float]:
        """loss… keys become bpb… keys (experiments.data.bpb)."""
        if not tokens_per_byte:
            return {}
        return {k.replace("loss", "bpb"): bpb_from_tokens_per_byte(v, tokens_per_byte) for k, v in losses.items()}

    def validate(T: int | None) -> float:
        return evaluate(raw_model, val_x, val_y, T, eval_bs, t.seed, ctx, precision)

    mu = default_loops(model_cfg)
    eval_bs = getattr(t, "eval_batch_size", None) or micro_bs
    every_s = 60.0 * float(getattr(t, "checkpoint_every_min", None) or 0)
    tokens_per_step = t.batch_size * model_cfg.block_size
    model.train()
    progress = Progress(label or model_cfg.name, steps, initial=start, unit="step", enabled=main,
                        state_path=run_dir / STATE_NAME)
    t0 = time.time()
    first_row = ctx.rank * local_bs
    try:
        for step in range(start, steps):
            x, y = stream.batch(step, t.batch_size)
            draws = distributed.draw_global(raw_model, model_cfg, t.batch_size, x.shape[1], gen, step)
            if not ctx.enabled and n_micro == 1:
                kw = distributed.rows_of_global_draws(draws, 0, t.batch_size, device) or {"generator": gen}
                loss, grad_norm, nonfinite = train_step(model, optimizer, scheduler, x, y, gen, step, device,
                                                        precision, t.grad_clip, forward_kw=kw)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                for k in range(n_micro):
                    a = first_row + k * micro_bs
                    b = a + micro_bs
                    kw = distributed.rows_of_global_draws(draws, a, b, device) or {"generator": gen}
                    with ctx.no_sync(model, sync=k == n_micro - 1):
                        with autocast(device, precision):
                            _, micro_loss = model(to_device(x[a:b], device), to_device(y[a:b], device), step=step,
                                                  **kw)
                        # Each micro-batch's share of the global mean (DDP averages the W ranks' gradients).
                        (micro_loss * (micro_bs / local_bs)).backward()
                    loss = loss + micro_loss.detach() * (micro_bs / local_bs)
            # One decision for all ranks: the global loss, "did any rank get the preemption signal" and "is a
            # timed checkpoint due on any rank's clock", in one all-reduce (no collective in one process).
            due = bool(every_s) and time.monotonic() - last_save >= every_s
            if ctx.enabled:
                packed = ctx.all_reduce_sum(torch.stack([loss.detach().float(),
                                                         torch.tensor(float(preemption.requested()), device=device),
                                                         torch.tensor(float(due), device=device)]))
                loss, preempt, due = packed[0] / ctx.world_size, bool(packed[1] > 0), bool(packed[2] > 0)
            if ctx.enabled or n_micro > 1:
                grad_norm, nonfinite = clip_and_step(raw_model, optimizer, loss, t.grad_clip)
                scheduler.step()
            if t.on_nonfinite == "skip":
                skipped_new = skipped_new + nonfinite  # on the device: read only when logged or saved
            elif bool(nonfinite):  # "stop" reads the flag every step
                # At step + 1, where the log puts the loss of step index `step` (step itself may hold the last one).
                emit({"train/loss": loss.item(), "train/nonfinite_step": step}, step + 1)
                writer.wait()
                if main:
                    sink.flush()  # a terminal state: the run is recorded as diverged
                progress.close()
                return TrainResult("diverged", step, skipped_steps=skipped)

            done = step + 1
            fault_point("train.step")  # tests: a crash or a signal on one rank at a chosen step
            # Step 1 too: an unstable injection can blow the state up within the first few steps.
            if done % LOG_EVERY == 0 or done in (1, steps):
                metrics = step_metrics(raw_model, loss, grad_norm, scheduler.get_last_lr()[0], done,
                                       tokens_per_step, settle_skipped(),
                                       (done - start) * tokens_per_step / max(time.time() - t0, 1e-9))
                emit(metrics, done)
                progress.update(done, loss=metrics["train/loss"], **{"tok/s": metrics["train/tokens_per_s"]})
            else:
                progress.update(done)
            if done % t.eval_every == 0 and (done < steps or not final_eval):  # a trunk's last step is a branch's
                # Split across the ranks and all-reduced: the same number everywhere, so an on_eval hook that
                # prunes stops all ranks alike.
                val_loss = validate(mu)
                emit({"val/loss": val_loss, **bpb_of({"val/loss": val_loss})}, done)
                if on_eval is not None:
                    on_eval(done, val_loss)
            if not ctx.enabled:
                preempt = preemption.requested()  # a signal during validation counts at once
            kept = done in keep_at
            if done < steps and (done % t.checkpoint_every == 0 or preempt or due or kept):
                save_checkpoint(done, wait=preempt or kept)
                if kept and main and keep is not None:
                    keep(done)
                if preempt:
                    progress.close()
                    preemption.hand_over()
        progress.close()
        writer.wait()
        if not final_eval:  # a trunk: its branches evaluate
            save_checkpoint(steps, wait=True)
            if main and keep is not None:
                keep(steps)
            return TrainResult("paused", steps, skipped_steps=skipped)

        final = {"eval/loss": validate(mu)}
        if model_cfg.kind == "parcae":
            for T in eval_loops(t, model_cfg):
                fault_point("eval.final")
                final[f"eval/loss_T{T}"] = validate(T)
        final.update(bpb_of(final))
        if not all(math.isfinite(v) for v in final.values()):
            emit(final, steps)
            if main:
                sink.flush()
            return TrainResult("diverged", steps, final, settle_skipped())
        emit({"val/loss": final["eval/loss"], **bpb_of({"val/loss": final["eval/loss"]}), **final}, steps)
        save_checkpoint(steps, final=final, wait=True)
        return TrainResult("finished", steps, final, skipped)
    except BaseException:
        # A failure: the write in flight may finish (its metrics stay in the checkpoint for the next start), but
        # nothing the checkpoint does not cover is flushed.
        writer.abandon()
        raise
