"""The training loop: AdamW or MuonAdamW with a WSD schedule, periodic validation, checkpoints, guard rails."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from experiments import checkpoint, preemption
from experiments.data import PackedStream
from parcae import ModelConfig, build_model
from parcae.optim import MuonAdamW, param_groups

log = logging.getLogger("experiments.trainer")
LOG_EVERY = 10  # steps between train/* metrics


def wsd_multiplier(step: int, total: int, warmup_fraction: float, cooldown_fraction: float) -> float:
    """Warm-up, stable, decay: linear warm-up, constant, then linear cooldown to 0 at `total`."""
    warmup = int(warmup_fraction * total)
    cooldown = int(cooldown_fraction * total)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step >= total - cooldown and cooldown > 0:
        return max(0.0, (total - step) / cooldown)
    return 1.0


def build_optimizer(model: torch.nn.Module, t, total_steps: int) -> torch.optim.Optimizer:
    """AdamW with weight decay on the blocks' matrices only, or the reference's MuonAdamW (parcae.md D.1).

    Both use parcae.optim's split: embeddings, norms, 1-D, injection parameters and C never decay.
    """
    if t.optimizer == "muon":
        return MuonAdamW(model, adamw_lr=t.lr, muon_lr=t.muon_lr, betas=(t.beta1, t.beta2), eps=t.eps,
                         muon_weight_decay=t.weight_decay, total_steps=total_steps)
    groups = param_groups(model)
    return torch.optim.AdamW([{"params": groups["muon"], "weight_decay": t.weight_decay},
                              {"params": groups["adamw"], "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_steps: int | None,
             batch_size: int, seed: int) -> float:
    """Mean validation loss (nats/token) at `num_steps` loops, with a fixed-seed initial state."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        _, loss = model(xb, yb, num_steps=num_steps, generator=gen)
        total += float(loss) * yb.numel()
        count += yb.numel()
    model.train(was_training)
    return total / count


@dataclass
class TrainResult:
    status: str  # finished | diverged
    steps: int
    final: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0


class MetricSink:
    """Buffers metrics; on flush appends them to metrics.jsonl and hands them to the tracker."""

    def __init__(self, path: Path, forward: Callable[[dict[str, float], int], None] | None,
                 flush_forward: Callable[[], None] | None):
        self.path = path
        self.forward = forward
        self.flush_forward = flush_forward
        self._lines: list[str] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._lines.append(json.dumps({"step": step, **metrics}))
        if self.forward:
            self.forward(metrics, step)

    def flush(self) -> None:
        if self._lines:
            with open(self.path, "a") as f:
                f.write("\n".join(self._lines) + "\n")
            self._lines = []
        if self.flush_forward:
            self.flush_forward()


def train(model_cfg: ModelConfig, train_cfg, steps: int, stream: PackedStream, val: tuple[torch.Tensor, torch.Tensor],
          run_dir: Path, sink: MetricSink, on_eval: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train to `steps`, resuming from run_dir's checkpoint if there is one.

    on_eval(step, val_loss) is called after each periodic validation (e.g. to prune an Optuna trial by
    raising); a preemption signal (see experiments.preemption) checkpoints and hands over for requeue.
    """
    t = train_cfg
    torch.manual_seed(t.seed)  # parameter init
    device = torch.device(t.device)
    model = build_model(model_cfg).to(device)
    optimizer = build_optimizer(model, t, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: wsd_multiplier(s, steps, t.warmup_fraction, t.cooldown_fraction))
    gen = torch.Generator().manual_seed(t.seed + 1)  # depth draws and initial states
    ckpt_path = run_dir / checkpoint.CHECKPOINT_NAME

    start, skipped = 0, 0
    state = checkpoint.load(ckpt_path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, skipped = state["step"], state["skipped_steps"]
        log.info("resuming from step %d/%d (%s)", start, steps, ckpt_path)

    def save_checkpoint(step: int) -> None:
        sink.flush()
        checkpoint.save(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "step": step, "skipped_steps": skipped,
        })

    val_x, val_y = val
    mu = model_cfg.mean_recurrence if model_cfg.kind == "parcae" else None
    eval_bs = t.batch_size
    tokens_per_step = t.batch_size * model_cfg.block_size
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=model_cfg.name, mininterval=2.0,
               disable=None, file=sys.stderr)
    t0 = time.time()
    for step in bar:
        x, y = stream.batch(step, t.batch_size)
        _, loss = model(x.to(device), y.to(device), generator=gen, step=step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        if finite:
            optimizer.step()
        elif t.on_nonfinite == "skip":
            skipped += 1
        else:
            sink.log({"train/loss": loss.item(), "train/nonfinite_step": step}, step)
            sink.flush()
            return TrainResult("diverged", step, skipped_steps=skipped)
        scheduler.step()

        done = step + 1
        # Step 1 too: an unstable injection can blow the state up within the first few steps.
        if done % LOG_EVERY == 0 or done in (1, steps):
            metrics = {"train/loss": loss.item(), "train/grad_norm": grad_norm.item(),
                       "train/lr": scheduler.get_last_lr()[0], "train/tokens": done * tokens_per_step,
                       "train/skipped_steps": skipped,
                       "train/tokens_per_s": (done - start) * tokens_per_step / max(time.time() - t0, 1e-9)}
            if hasattr(model, "injection_stats"):
                metrics.update({f"monitor/{k}": v for k, v in model.injection_stats().items()})
            sink.log(metrics, done)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if done % t.eval_every == 0 and done < steps:
            val_loss = evaluate(model, val_x, val_y, mu, eval_bs, t.seed)
            sink.log({"val/loss": val_loss}, done)
            if on_eval is not None:
                on_eval(done, val_loss)
        if done < steps and (done % t.checkpoint_every == 0 or preemption.requested()):
            save_checkpoint(done)
            if preemption.requested():
                preemption.hand_over()
    bar.close()

    final = {"eval/loss": evaluate(model, val_x, val_y, mu, eval_bs, t.seed)}
    if model_cfg.kind == "parcae":
        for T in sorted(set(t.test_loops)):
            final[f"eval/loss_T{T}"] = evaluate(model, val_x, val_y, T, eval_bs, t.seed)
    if not all(math.isfinite(v) for v in final.values()):
        sink.log(final, steps)
        sink.flush()
        return TrainResult("diverged", steps, final, skipped)
    sink.log({"val/loss": final["eval/loss"], **final}, steps)
    save_checkpoint(steps)
    return TrainResult("finished", steps, final, skipped)
